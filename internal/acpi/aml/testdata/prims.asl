/*
 * The AML encoder's primitives, compiled by iasl (gen.sh) into prims.aml;
 * aml_test.go encodes the same terms and compares them with the body of
 * the table iasl made (after its 36-byte header).
 */
DefinitionBlock ("", "SSDT", 2, "MICROV", "PRIMS   ", 1)
{
    Name (I000, Zero)
    Name (I001, One)
    Name (I002, 0x2A)
    Name (I003, 0x1234)
    Name (I004, 0x12345678)
    Name (I005, 0x123456789A)
    Name (I006, 0xFFFFFFFFFFFFFFFF)
    Name (S000, "LNRO0005")
    Name (E000, EisaId ("PNP0501"))
    Name (E001, EisaId ("PNP0A03"))
    Name (P000, Package () {5, 0, 0, 0})
    Name (R000, ResourceTemplate ()
    {
        IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
        IRQNoFlags () {4}
        IRQNoFlags () {3, 15}
        Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000)
        Memory32Fixed (ReadOnly, 0xFEC00000, 0x00000100)
        Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {5}
        Interrupt (ResourceConsumer, Level, ActiveLow, Shared, ,, ) {20, 21}
    })
    Scope (_SB)
    {
        Device (DEV0)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 0x0F)
        }
        Device (DEV1)
        {
            Name (_HID, EisaId ("PNP0A05"))
            Device (SUB0)
            {
                Name (_HID, EisaId ("PNP0501"))
                Name (_UID, One)
            }
        }
    }
    Name (_SB.DEV1.SUB0.X000, 0x07)
    Name (_SB.DEV0.X001, 0x08)
}
