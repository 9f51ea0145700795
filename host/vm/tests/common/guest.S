# Test guest: a boot sector that SeaBIOS loads at 0x7c00 from the first disk.
#
# It prints a banner on COM1, then acts on the mode byte at offset 0x1b0:
#   0 = idle: echo COM1 input back, ignore ACPI (like a guest without ACPI support)
#   1 = power off at once (ACPI S5 through PM1a_CNT, port 0x604 as SeaBIOS sets it up)
#   2 = panic at once (pvpanic, port 0x505)
#   3 = idle and echo, and power off when the ACPI power button is pressed
#       (PWRBTN_EN set in PM1a_EN at 0x602; PWRBTN_STS polled in PM1a_STS at 0x600)
# The idle loop sleeps in `hlt` and wakes on interrupts (serial input, the ACPI
# SCI, the BIOS timer), so an idle test VM costs almost no CPU under TCG.
#
# Rebuild: as --32 -o g.o guest.S && ld -m elf_i386 -e 0 -Ttext=0 -o g.elf g.o &&
#          objcopy -O binary g.elf guest.bin   (512 bytes; embedded in mod.rs)
    .code16
    .text
start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7c00, %sp
    # COM1: 115200 8N1
    movw $0x3fb, %dx
    movb $0x80, %al
    outb %al, %dx
    movw $0x3f8, %dx
    movb $1, %al
    outb %al, %dx
    movw $0x3f9, %dx
    xorb %al, %al
    outb %al, %dx
    movw $0x3fb, %dx
    movb $3, %al
    outb %al, %dx
    # FIFOs on and cleared (FCR): input that comes while the vCPU is not
    # running waits in the 16-byte FIFO.
    movw $0x3fa, %dx
    movb $7, %al
    outb %al, %dx
    # Receive interrupts on (IER), routed to the PIC (MCR OUT2), IRQ4 unmasked:
    # input wakes the idle loop from hlt. SeaBIOS's default handler sends EOI.
    movw $0x3f9, %dx
    movb $1, %al
    outb %al, %dx
    movw $0x3fc, %dx
    movb $0x0b, %al
    outb %al, %dx
    inb $0x21, %al
    andb $0xef, %al
    outb %al, $0x21
    # Mode 3: enable the power button event (PWRBTN_EN in PM1a_EN), or QEMU
    # does not latch PWRBTN_STS. Before the banner: a test that presses the
    # button once it sees the banner must find the guest ready for it (a
    # vCPU preempted between the two lost the press, and the guest never
    # powered off).
    movb (0x7c00 + mode), %bl
    cmpb $3, %bl
    jne 6f
    movw $0x602, %dx
    movw $0x100, %ax
    outw %ax, %dx
6:  movw $(0x7c00 + banner), %si
    call puts
    cmpb $1, %bl
    je poweroff
    cmpb $2, %bl
    je panic
idle:
    sti
    hlt
    cli
    cmpb $3, %bl
    jne 1f
    movw $0x600, %dx
    inw %dx, %ax
    testw $0x100, %ax
    jnz poweroff
1:  movw $0x3fd, %dx
    inb %dx, %al
    testb $1, %al
    jz idle
    movw $0x3f8, %dx
    inb %dx, %al
    call putc
    jmp 1b
poweroff:
    movw $(0x7c00 + msg_off), %si
    call puts
    movw $0x604, %dx
    movw $0x2000, %ax
    outw %ax, %dx
2:  hlt
    jmp 2b
panic:
    movw $(0x7c00 + msg_panic), %si
    call puts
    movw $0x505, %dx
    movb $1, %al
    outb %al, %dx
3:  hlt
    jmp 3b
putc:
    pushw %dx
    pushw %ax
    movw $0x3fd, %dx
4:  inb %dx, %al
    testb $0x20, %al
    jz 4b
    popw %ax
    movw $0x3f8, %dx
    outb %al, %dx
    popw %dx
    ret
puts:
    lodsb
    testb %al, %al
    jz 5f
    call putc
    jmp puts
5:  ret
banner:
    .asciz "NASVISOR-GUEST-UP\r\n"
msg_off:
    .asciz "NASVISOR-GUEST-POWEROFF\r\n"
msg_panic:
    .asciz "NASVISOR-GUEST-PANIC\r\n"
    .org 0x1b0
mode:
    .byte 0
    .org 0x1fe
    .byte 0x55, 0xaa
