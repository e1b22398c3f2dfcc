/*
 * The DSDT that Build writes for sampleConfig (tables_test.go): COM1, two
 * virtio-mmio windows (as for a machine with virtio-rng and one disk) and \_S5. testdata/gen.sh compiles it with iasl into
 * dsdt.aml, whose AML the test compares with Build's.
 */
DefinitionBlock ("", "DSDT", 2, "MICROV", "MICROVM ", 1)
{
    Scope (_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
                IRQNoFlags () {4}
            })
        }
        Device (VR00)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {5}
            })
        }
        Device (VR01)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0001000, 0x00001000)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {6}
            })
        }
    }
    Name (_S5, Package () {5, 0, 0, 0})
}
