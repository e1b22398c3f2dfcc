package sandbox

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// go-seccomp-bpf v1.6.0 compiles a syscall's argument conditions by
// loading the argument into the accumulator, and when a condition fails it
// jumps on to the next syscall comparison without loading the syscall
// number again: that comparison then tests the argument. mmap with
// PROT_READ|PROT_EXEC (5) failed its PROT_EXEC condition and went on to
// match fstat (5), and was allowed (TestFilterDecisions caught it).
//
// reloadNr repairs the assembled program: every comparison that can be
// reached both with the syscall number and with an argument in the
// accumulator gets a load of the number (seccomp_data.nr, offset 0) in
// front of it, and the jumps to it go to that load. It then checks that
// every comparison sees one kind of value only.

// What the accumulator holds.
const (
	accNr   = 1 << iota // seccomp_data.nr
	accArch             // seccomp_data.arch
	accArg              // an argument word
)

func accOf(off uint32) uint8 {
	switch off {
	case 0:
		return accNr
	case 4:
		return accArch
	}
	return accArg
}

// targets returns where instruction i goes next: the true and false
// targets of a conditional jump, the one target of anything else, none
// for a return.
func targets(insts []bpf.Instruction, i int) []int {
	switch in := insts[i].(type) {
	case bpf.JumpIf:
		return []int{i + 1 + int(in.SkipTrue), i + 1 + int(in.SkipFalse)}
	case bpf.Jump:
		return []int{i + 1 + int(in.Skip)}
	case bpf.RetConstant, bpf.RetA:
		return nil
	}
	return []int{i + 1}
}

// accStates returns, per instruction, what the accumulator may hold when
// it runs.
func accStates(insts []bpf.Instruction) ([]uint8, error) {
	in := make([]uint8, len(insts))
	seen := make([]bool, len(insts))
	work := []int{0}
	seen[0] = true
	for len(work) > 0 {
		i := work[len(work)-1]
		work = work[:len(work)-1]
		out := in[i]
		if ld, ok := insts[i].(bpf.LoadAbsolute); ok {
			out = accOf(ld.Off)
		}
		for _, t := range targets(insts, i) {
			if t >= len(insts) {
				return nil, fmt.Errorf("instruction %d jumps past the end", i)
			}
			if !seen[t] || in[t]|out != in[t] {
				seen[t] = true
				in[t] |= out
				work = append(work, t)
			}
		}
	}
	return in, nil
}

func reloadNr(insts []bpf.Instruction) ([]bpf.Instruction, error) {
	in, err := accStates(insts)
	if err != nil {
		return nil, err
	}
	// entry[i] is where jumps to old instruction i now land: the inserted
	// load if it got one; at[i] is where the instruction itself is.
	entry, at := make([]int, len(insts)), make([]int, len(insts))
	var out []bpf.Instruction
	for i, inst := range insts {
		entry[i] = len(out)
		if _, ok := inst.(bpf.JumpIf); ok && in[i]&accNr != 0 && in[i]&accArg != 0 {
			out = append(out, bpf.LoadAbsolute{Off: 0, Size: 4})
		}
		at[i] = len(out)
		out = append(out, inst)
	}
	skip := func(i, to int) (int, error) {
		d := entry[to] - at[i] - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("instruction %d: its jump to %d does not fit after the reloads", i, to)
		}
		return d, nil
	}
	for i, inst := range insts {
		switch j := inst.(type) {
		case bpf.JumpIf:
			t, err := skip(i, i+1+int(j.SkipTrue))
			if err != nil {
				return nil, err
			}
			f, err := skip(i, i+1+int(j.SkipFalse))
			if err != nil {
				return nil, err
			}
			j.SkipTrue, j.SkipFalse = uint8(t), uint8(f)
			out[at[i]] = j
		case bpf.Jump:
			t := entry[i+1+int(j.Skip)] - at[i] - 1
			j.Skip = uint32(t)
			out[at[i]] = j
		}
	}
	// Check the result: each comparison sees one kind of value.
	after, err := accStates(out)
	if err != nil {
		return nil, err
	}
	for i, inst := range out {
		if _, ok := inst.(bpf.JumpIf); ok {
			if s := after[i]; s&(s-1) != 0 {
				return nil, fmt.Errorf("instruction %d compares a mix of values (%b)", i, s)
			}
		}
	}
	return out, nil
}
