package devices

import (
	"io"
	"sync"
)

// Serial is a 16550A UART (the register model of the National Semiconductor
// PC16550D datasheet). Transmit is instantaneous: THR is always empty, so
// LSR.THRE and LSR.TEMT are always set. Receive goes through a 64-byte FIFO
// fed by the host (Enqueue).
type Serial struct {
	mu  sync.Mutex
	out io.Writer
	irq IRQLine

	ier, lcr, mcr, scr, dll, dlm, fcr uint8
	rx                                []byte
	threPending                       bool // THR-empty interrupt waiting for IIR read or THR write
	irqHigh                           bool
	space                             chan struct{} // signalled when the guest drains the FIFO
	// OnFirstByte, if set, is called once, on the first byte the guest sends.
	OnFirstByte func()
	sentAny     bool
}

// Register offsets.
const (
	uartRBR = 0 // receive buffer (read), THR (write), DLL (DLAB)
	uartIER = 1 // interrupt enable, DLM (DLAB)
	uartIIR = 2 // interrupt identification (read), FCR (write)
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7

	ierRDA  = 0x01 // received data available
	ierTHRE = 0x02 // transmitter holding register empty

	iirNone = 0x01
	iirTHRE = 0x02
	iirRDA  = 0x04
	iirFIFO = 0xc0

	lcrDLAB = 0x80

	lsrDR   = 0x01
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80

	fifoSize = 64
)

// NewSerial returns a UART that writes guest output to out and signals irq.
func NewSerial(out io.Writer, irq IRQLine) *Serial {
	return &Serial{out: out, irq: irq, space: make(chan struct{}, 1)}
}

// pending returns the IIR value for the highest-priority pending interrupt.
func (s *Serial) pendingIIR() uint8 {
	switch {
	case s.ier&ierRDA != 0 && len(s.rx) > 0:
		return iirRDA
	case s.ier&ierTHRE != 0 && s.threPending:
		return iirTHRE
	}
	return iirNone
}

// updateIRQ drives the (edge-triggered ISA) line to match the pending state;
// called with s.mu held.
func (s *Serial) updateIRQ() {
	high := s.pendingIIR() != iirNone && s.mcr&mcrOUT2 != 0
	if s.mcr&mcrLoop != 0 {
		high = false // in loopback the interrupt output is disconnected
	}
	if high != s.irqHigh && s.irq != nil {
		s.irqHigh = high
		_ = s.irq.SetLevel(high)
	}
}

func (s *Serial) Read(off uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range data {
		data[i] = 0
	}
	v := uint8(0)
	switch off {
	case uartRBR:
		if s.lcr&lcrDLAB != 0 {
			v = s.dll
			break
		}
		if len(s.rx) > 0 {
			v = s.rx[0]
			s.rx = s.rx[1:]
			if len(s.rx) == 0 {
				s.rx = nil
			}
			select {
			case s.space <- struct{}{}:
			default:
			}
		}
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			v = s.dlm
		} else {
			v = s.ier
		}
	case uartIIR:
		v = s.pendingIIR()
		if v == iirTHRE {
			s.threPending = false // reading IIR clears a THRE interrupt
		}
		if s.fcr&1 != 0 {
			v |= iirFIFO
		}
	case uartLCR:
		v = s.lcr
	case uartMCR:
		v = s.mcr
	case uartLSR:
		v = lsrTHRE | lsrTEMT
		if len(s.rx) > 0 {
			v |= lsrDR
		}
	case uartMSR:
		if s.mcr&mcrLoop != 0 {
			// Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD; Linux's
			// 8250 probe checks this.
			if s.mcr&mcrDTR != 0 {
				v |= msrDSR
			}
			if s.mcr&mcrRTS != 0 {
				v |= msrCTS
			}
			if s.mcr&mcrOUT1 != 0 {
				v |= msrRI
			}
			if s.mcr&mcrOUT2 != 0 {
				v |= msrDCD
			}
		} else {
			v = msrDCD | msrDSR | msrCTS
		}
	case uartSCR:
		v = s.scr
	}
	data[0] = v
	s.updateIRQ()
}

func (s *Serial) Write(off uint64, data []byte) {
	v := data[0]
	s.mu.Lock()
	var out []byte
	switch off {
	case uartRBR:
		if s.lcr&lcrDLAB != 0 {
			s.dll = v
			break
		}
		if s.mcr&mcrLoop != 0 {
			if len(s.rx) < fifoSize {
				s.rx = append(s.rx, v)
			}
		} else {
			out = data[:1]
		}
		s.threPending = true // the byte left THR at once
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			s.dlm = v
			break
		}
		// Enabling ETBEI while THR is empty raises THRE at once.
		if v&ierTHRE != 0 && s.ier&ierTHRE == 0 {
			s.threPending = true
		}
		s.ier = v & 0x0f
	case uartIIR:
		s.fcr = v
		if v&0x02 != 0 { // clear RX FIFO
			s.rx = nil
		}
	case uartLCR:
		s.lcr = v
	case uartMCR:
		s.mcr = v & 0x1f
	case uartSCR:
		s.scr = v
	}
	first := out != nil && !s.sentAny
	if out != nil {
		s.sentAny = true
	}
	s.updateIRQ()
	s.mu.Unlock()
	if first && s.OnFirstByte != nil {
		s.OnFirstByte()
	}
	if out != nil && s.out != nil {
		_, _ = s.out.Write(out) // console errors must not stop the guest
	}
}

// Enqueue offers host input to the receive FIFO and returns how many bytes
// fit. Space() signals when the guest has drained some.
func (s *Serial) Enqueue(b []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(b), fifoSize-len(s.rx))
	s.rx = append(s.rx, b[:n]...)
	s.updateIRQ()
	return n
}

// Space is signalled after the guest reads from the receive FIFO.
func (s *Serial) Space() <-chan struct{} { return s.space }
