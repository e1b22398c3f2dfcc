#!/bin/bash
# Boots every micro-guest under QEMU/TCG through the PVH shim (qemu/pvh.S,
# qemu/shim.c) and checks the output lines the VMM tests expect.  A developer
# aid for machines without /dev/kvm; it is not the VMM and not part of CI.
#   tests/guests/qemu/smoke.sh [OUT]       (default OUT: a temporary directory)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
command -v qemu-system-x86_64 >/dev/null || { echo "smoke: qemu-system-x86_64 not found (apt-get install qemu-system-x86)"; exit 1; }
make -s -C "$here" OUT="$out" all qemu || exit 1

pass=0 fail=0
run() { # name expected-output-file qemu-args...
	local name=$1 want=$2; shift 2
	local got="$out/$name.out"
	timeout 120 qemu-system-x86_64 -nodefaults -display none -no-reboot \
		-serial "file:$got" "$@" >/dev/null 2>&1
	if diff -u "$want" "$got" >"$out/$name.diff"; then
		echo "PASS $name"; pass=$((pass + 1))
	else
		echo "FAIL $name"; cat "$out/$name.diff"; fail=$((fail + 1))
	fi
}
expect() { local n=$1; shift; printf '%s\n' "$@" >"$out/$n.want"; }

printf 'INITRD-DATA-123\n' >"$out/initrd.bin"
fnv=$(python3 -c "
h=2166136261
for b in open('$out/initrd.bin','rb').read(): h=((h^b)*16777619)&0xffffffff
print('%08x'%h)" 2>/dev/null || echo 79542389)

# hello: only the lines that do not depend on QEMU's memory map.
timeout 60 qemu-system-x86_64 -nodefaults -display none -no-reboot -m 256 \
	-serial "file:$out/hello.out" -kernel "$out/qemu/hello.elf" \
	-append 'a=b c' -initrd "$out/initrd.bin" >/dev/null 2>&1
if head -2 "$out/hello.out" | diff -u <(printf 'microguest: hello\ncmdline: a=b c\n') - &&
	grep -Eq '^e820: [0-9]+ entries$' "$out/hello.out" &&
	grep -Eq '^e820: 0x[0-9a-f]{16} 0x[0-9a-f]{16} [0-9]+$' "$out/hello.out" &&
	grep -Eq "^initrd: addr=0x[0-9a-f]+ size=16 fnv=0x$fnv\$" "$out/hello.out"; then
	echo "PASS hello"; pass=$((pass + 1))
else
	echo "FAIL hello"; cat "$out/hello.out"; fail=$((fail + 1))
fi

expect triple 'microguest: triple'
run triple "$out/triple.want" -m 256 -kernel "$out/qemu/triple.elf" -d cpu_reset -D "$out/triple.log"
grep -q 'Triple fault' "$out/triple.log" || { echo "FAIL triple: no triple fault logged"; fail=$((fail + 1)); }

expect spin 'microguest: spin'
timeout 3 qemu-system-x86_64 -nodefaults -display none -no-reboot -m 256 \
	-serial "file:$out/spin.out" -kernel "$out/qemu/spin.elf" >/dev/null 2>&1
if [ $? -eq 124 ] && diff -u "$out/spin.want" "$out/spin.out"; then
	echo "PASS spin"; pass=$((pass + 1))
else
	echo "FAIL spin (must still be running after 3 s)"; fail=$((fail + 1))
fi

expect pio 'pio: start' 'pio: done 1234'
run pio "$out/pio.want" -m 256 -kernel "$out/qemu/pio.elf" -append 'x count=1234'

expect mem-low 'mem: top=0xffe0000' 'mem: no high memory' 'mem: low ok 1'
run mem-low "$out/mem-low.want" -m 256 -kernel "$out/qemu/mem.elf"
expect mem-high 'mem: top=0x180000000' 'mem: high ok 3' 'mem: low ok 1'
run mem-high "$out/mem-high.want" -m 5G -kernel "$out/qemu/mem.elf"

for n in 1 4; do
	lines=("mptable: $n cpus")
	for ((i = 0; i < n; i++)); do lines+=("cpu $i up"); done
	lines+=("smp: $n cpus up")
	expect "smp$n" "${lines[@]}"
	# AP lines may come in any order: compare sorted.
	timeout 60 qemu-system-x86_64 -nodefaults -display none -no-reboot -m 256 -smp $n \
		-serial "file:$out/smp$n.out" -kernel "$out/qemu/smp.elf" >/dev/null 2>&1
	if diff -u <(sort "$out/smp$n.want") <(sort "$out/smp$n.out") &&
		[ "$(head -1 "$out/smp$n.out")" = "mptable: $n cpus" ] &&
		[ "$(tail -1 "$out/smp$n.out")" = "smp: $n cpus up" ]; then
		echo "PASS smp$n"; pass=$((pass + 1))
	else
		echo "FAIL smp$n"; cat "$out/smp$n.out"; fail=$((fail + 1))
	fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
