/*
 * Methods and Notify, as the DSDT's generic event device uses them
 * (compiled by gen.sh into methods.aml; aml_test.go encodes the same).
 */
DefinitionBlock ("", "SSDT", 2, "MICROV", "METHODS ", 1)
{
    Scope (_SB)
    {
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
            Method (_EVT, 1, NotSerialized)
            {
                Notify (VGEN, 0x80)
            }
        }
        Method (M000, 0, Serialized)
        {
            Notify (\_SB.VGEN, Zero)
            Notify (GED0, 0x1234)
        }
    }
}
