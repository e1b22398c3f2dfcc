/*
 * dsdt.asl's machine with the VM generation ID (tables_test.go,
 * TestDSDTAgainstIasl "vmgenid"): VGEN, whose ADDR points at the
 * identifier, and GED0, the generic event device whose interrupt (GSI 21)
 * notifies VGEN. testdata/gen.sh compiles it into dsdt-vmgenid.aml.
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
        Device (VGEN)
        {
            Name (_HID, "MVMG0001")
            Name (_CID, "VM_Gen_Counter")
            Name (_DDN, "VM_Gen_Counter")
            Name (ADDR, Package (0x02) {0x000FF000, Zero})
        }
        Device (GED0)
        {
            Name (_HID, "ACPI0013")
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {21}
            })
            Method (_EVT, 1, NotSerialized)
            {
                Notify (VGEN, 0x80)
            }
        }
    }
    Name (_S5, Package () {5, 0, 0, 0})
}
