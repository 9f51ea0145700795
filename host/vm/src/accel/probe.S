# nasvisor accelerator probe: the whole guest is this 64 KiB "BIOS" (-bios).
#
# It does what a real guest kernel does first: real mode -> protected mode ->
# long mode with PAE paging, touches 16 MiB of RAM, then spins a 20-million-
# iteration loop, and finally writes 0x2a to the isa-debug-exit port 0x501, so
# QEMU exits with status (0x2a << 1) | 1 = 85.
#
# Why the loop: on a nested host where KVM "works" but runs guest code about a
# thousand times slower than native (a Linux guest seems to hang in its
# decompressor), a probe that only switches modes passes under KVM. The loop
# takes ~10 ms under a healthy KVM, ~0.2 s under TCG and ~20 s under such a
# broken KVM, so a timeout of a few seconds separates them.
#
# Rebuild (the bytes are embedded in mod.rs; a unit test checks they match):
#   as --64 -o probe.o probe.S && ld -e 0 -Ttext=0 -o probe.elf probe.o &&
#   objcopy -O binary probe.elf probe.bin
# The ROM is probe.bin at offset 0, 0xF4 (hlt) fill, and at 0xFFF0 (the reset
# vector, CS=F000 IP=FFF0) a far jump to F000:0000.
    .set BASE, 0xF0000
    .text
    .code16
start:
    cli
    lgdtl %cs:gdt_desc
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(BASE + pm32)
    .code32
pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    # Page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): identity-map
    # the first 1 GiB with 2 MiB pages.
    movl $0x1000, %edi
    xorl %eax, %eax
    movl $0xC00, %ecx
    rep stosl
    movl $0x2003, 0x1000
    movl $0x3003, 0x2000
    movl $0x3000, %edi
    movl $0x83, %eax
    movl $512, %ecx
1:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b
    movl $0x1000, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmp $0x18, $(BASE + lm64)
    .code64
lm64:
    # Touch one qword in each 4 KiB page from 1 MiB to 17 MiB.
    movq $0x100000, %rdi
    movq $4096, %rcx
2:  movq %rdi, (%rdi)
    addq $4096, %rdi
    decq %rcx
    jnz 2b
    movq $20000000, %rcx
3:  decq %rcx
    jnz 3b
    movw $0x501, %dx
    movb $0x2a, %al
    outb %al, %dx
4:  hlt
    jmp 4b
    .p2align 3
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .quad 0x00AF9B000000FFFF
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long BASE + gdt
