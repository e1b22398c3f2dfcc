package main

// Port output for milestones and the i8042 reset: OUT instructions under
// ioperm (withIoperm, per architecture), else /dev/port.

import (
	"fmt"
	"os"
)

// devPortWriteByte writes one byte to port through /dev/port (CONFIG_DEVPORT).
func devPortWriteByte(port uint16, val uint8) error {
	f, err := os.OpenFile("/dev/port", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt([]byte{val}, int64(port))
	return err
}

// outByte does a 1-byte port write, via OUTB or else /dev/port.
func outByte(port uint16, val uint8) error {
	err := withIoperm(port, 1, func() { outb(port, val) })
	if err == nil {
		return nil
	}
	if err2 := devPortWriteByte(port, val); err2 != nil {
		return fmt.Errorf("port %#x: %w; /dev/port: %w", port, err, err2)
	}
	return nil
}

// outLong does a 4-byte port write. /dev/port can only do byte writes, so
// the fallback writes just the low byte (for milestones: the code without
// the value) rather than four bytes to four consecutive ports.
func outLong(port uint16, val uint32) error {
	err := withIoperm(port, 4, func() { outl(port, val) })
	if err == nil {
		return nil
	}
	if err2 := devPortWriteByte(port, uint8(val)); err2 != nil {
		return fmt.Errorf("port %#x: %w; /dev/port: %w", port, err, err2)
	}
	return nil
}
