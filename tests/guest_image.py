# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A test guest for the serial console: a raw disk image holding one 512-byte x86 boot sector.

SeaBIOS loads it from any bootable disk (IDE or virtio-blk) to 0000:7C00 in real mode. It
sets COM1 (I/O 0x3F8) to 115200 baud, 8N1, FIFOs on, no UART interrupts, then forever:

- prints ``vmconsole serial console ok <n>\\r\\n`` (n = 0, 1, 2, ... in decimal),
- for about one second (18 BIOS timer ticks of 55 ms; the second starts again at each byte
  received or key reported, so a line never splits what is typed in one go), echoes every byte received on COM1
  back to COM1, and writes every key the BIOS keyboard buffer gets (INT 16h) to COM1 as
  ``[`` + its scan code in two upper-case hex digits + the BIOS's ASCII byte (US layout; 0 for
  none) + ``]`` (e.g. ``[15y]`` for the key right of T), sleeping with ``hlt`` between timer
  ticks and keys so an idle guest costs no CPU.

The bytes are assembled here by hand (two passes for the jump targets), the listing next to
each instruction; no assembler is needed on a lab host. Use it as a script::

    python3 tests/guest_image.py OUT.img      # writes the image (1 MiB, sparse)

or import :func:`boot_sector` / :func:`write_image`. Boot it with e.g.::

    qemu-system-x86_64 -machine pc -accel tcg -nodefaults -display none -m 16 \\
        -drive file=OUT.img,format=raw,if=virtio -serial stdio
"""

from __future__ import annotations

import os
import struct
import sys

BANNER = b"vmconsole serial console ok "
LOAD_ADDRESS = 0x7C00
SECTOR_SIZE = 512
COM1 = 0x3F8                    # THR/RBR (DLAB=0), divisor low (DLAB=1)
COM1_IER, COM1_FCR, COM1_LCR, COM1_MCR, COM1_LSR = COM1 + 1, COM1 + 2, COM1 + 3, COM1 + 4, COM1 + 5
BDA_TICKS = 0x046C              # BIOS data area: timer ticks since midnight (18.2 Hz), low word
TICKS_PER_LINE = 18             # ~1 s
# SeaBIOS derives a CHS geometry of 16 heads x 63 sectors from the disk size and will not read
# a disk of less than one such cylinder (516096 bytes; measured with SeaBIOS 1.16, QEMU 7.2):
# the image is the boot sector followed by zeros up to 1 MiB (a sparse file).
IMAGE_SIZE = 1024 * 1024


def _u16(value):
    return struct.pack("<H", value & 0xFFFF)


def boot_sector():
    """The 512 bytes of the boot sector (ending in the 55 AA boot signature)."""
    # Each item: a label (str) or (bytes, fixup). fixup is None, or (kind, label):
    # "rel8"/"rel16" = jump displacement to label, "abs16" = label's address.
    p = []

    def op(code, fixup=None):
        p.append((bytes(code), fixup))

    def label(name):
        p.append(name)

    def out(port, value):                   # mov dx, port / mov al, value / out dx, al
        op(b"\xBA" + _u16(port))
        op([0xB0, value])
        op([0xEE])

    label("entry")
    op([0xEA], ("abs16", "start"))          # jmp  0000:start    (CS=0, whatever SeaBIOS used)
    op([0x00, 0x00])                        # (its segment word)
    label("start")
    op([0xFA])                              # cli
    op([0x31, 0xC0])                        # xor  ax, ax
    op([0x8E, 0xD8])                        # mov  ds, ax
    op([0x8E, 0xC0])                        # mov  es, ax
    op([0x8E, 0xD0])                        # mov  ss, ax
    op(bytes([0xBC]) + _u16(LOAD_ADDRESS))  # mov  sp, 0x7C00    (stack grows down below us)
    op([0xFB])                              # sti                (the BIOS timer must tick)
    op([0xFC])                              # cld
    out(COM1_IER, 0x00)                     # IER = 0: no UART interrupts, we poll
    out(COM1_LCR, 0x80)                     # LCR = DLAB: the next two ports are the divisor
    out(COM1, 0x01)                         # divisor low  = 1 -> 115200 baud
    out(COM1_IER, 0x00)                     # divisor high = 0
    out(COM1_LCR, 0x03)                     # LCR = 8 data bits, no parity, 1 stop bit, DLAB off
    out(COM1_FCR, 0xC7)                     # FCR = FIFOs on, both cleared, 14-byte trigger
    out(COM1_MCR, 0x03)                     # MCR = DTR + RTS
    op([0x31, 0xED])                        # xor  bp, bp        (bp = line counter)

    label("line")
    op([0xBE], ("abs16", "banner"))         # mov  si, banner
    label("puts")
    op([0xAC])                              # lodsb
    op([0x84, 0xC0])                        # test al, al
    op([0x74], ("rel8", "number"))          # jz   number
    op([0xE8], ("rel16", "putc"))           # call putc
    op([0xEB], ("rel8", "puts"))            # jmp  puts
    label("number")                         # print bp in decimal: push digits, pop them in order
    op([0x89, 0xE8])                        # mov  ax, bp
    op(bytes([0xBB]) + _u16(10))            # mov  bx, 10
    op([0x31, 0xC9])                        # xor  cx, cx
    label("divide")
    op([0x31, 0xD2])                        # xor  dx, dx
    op([0xF7, 0xF3])                        # div  bx            (ax = dx:ax / 10, dx = remainder)
    op([0x52])                              # push dx
    op([0x41])                              # inc  cx
    op([0x85, 0xC0])                        # test ax, ax
    op([0x75], ("rel8", "divide"))          # jnz  divide
    label("digit")
    op([0x58])                              # pop  ax
    op([0x04, ord("0")])                    # add  al, '0'
    op([0xE8], ("rel16", "putc"))           # call putc
    op([0xE2], ("rel8", "digit"))           # loop digit
    op([0xB0, 0x0D])                        # mov  al, 13
    op([0xE8], ("rel16", "putc"))           # call putc
    op([0xB0, 0x0A])                        # mov  al, 10
    op([0xE8], ("rel16", "putc"))           # call putc
    op([0x45])                              # inc  bp

    # After a byte echoed or a key reported too ("again"): the next line comes a second after the last of
    # them, so it never splits what is typed in one go (a word's echo, a run of keys) in two.
    label("again")
    op(bytes([0x8B, 0x1E]) + _u16(BDA_TICKS))  # mov  bx, [0x046C]  (tick count at the start)
    label("wait")
    op(bytes([0xBA]) + _u16(COM1_LSR))      # mov  dx, COM1+5    (line status)
    op([0xEC])                              # in   al, dx
    op([0xA8, 0x01])                        # test al, 1         (data ready?)
    op([0x74], ("rel8", "idle"))            # jz   idle
    op(bytes([0xBA]) + _u16(COM1))          # mov  dx, COM1
    op([0xEC])                              # in   al, dx        (the received byte)
    op([0xE8], ("rel16", "putc"))           # call putc          (echo it)
    op([0xEB], ("rel8", "again"))           # jmp  again         (drain the FIFO first)
    label("idle")
    op([0xB4, 0x01])                        # mov  ah, 1
    op([0xCD, 0x16])                        # int  16h           (a key waiting? ZF=0 if so)
    op([0x74], ("rel8", "ticks"))           # jz   ticks
    op([0xB4, 0x00])                        # mov  ah, 0
    op([0xCD, 0x16])                        # int  16h           (take it: ah = scan code, al = ASCII)
    op([0x50])                              # push ax
    op([0xB0, ord("[")])                    # mov  al, '['
    op([0xE8], ("rel16", "putc"))           # call putc
    op([0x58])                              # pop  ax
    op([0x50])                              # push ax
    op([0x88, 0xE0])                        # mov  al, ah
    op([0xC0, 0xE8, 0x04])                  # shr  al, 4
    op([0xE8], ("rel16", "hexdigit"))       # call hexdigit
    op([0x58])                              # pop  ax
    op([0x50])                              # push ax
    op([0x88, 0xE0])                        # mov  al, ah
    op([0x24, 0x0F])                        # and  al, 0x0F
    op([0xE8], ("rel16", "hexdigit"))       # call hexdigit
    op([0x58])                              # pop  ax
    op([0xE8], ("rel16", "putc"))           # call putc          (the ASCII byte)
    op([0xB0, ord("]")])                    # mov  al, ']'
    op([0xE8], ("rel16", "putc"))           # call putc
    op([0xEB], ("rel8", "again"))           # jmp  again
    label("ticks")
    op(bytes([0xA1]) + _u16(BDA_TICKS))     # mov  ax, [0x046C]
    op([0x29, 0xD8])                        # sub  ax, bx
    op([0x83, 0xF8, TICKS_PER_LINE])        # cmp  ax, 18
    op([0x73], ("rel8", "line"))            # jae  line          (a second is over)
    op([0xF4])                              # hlt                (sleep until the next interrupt)
    op([0xEB], ("rel8", "wait"))            # jmp  wait

    label("hexdigit")                       # send the hex digit of al (0-15) on COM1
    op([0x04, ord("0")])                    # add  al, '0'
    op([0x3C, ord("9")])                    # cmp  al, '9'
    op([0x76, 0x02])                        # jbe  +2            (skip the add)
    op([0x04, 0x07])                        # add  al, 7         ('A'-'9'-1)
    label("putc")                           # send al on COM1; keeps every register
    op([0x52])                              # push dx
    op([0x50])                              # push ax
    op(bytes([0xBA]) + _u16(COM1_LSR))      # mov  dx, COM1+5
    label("busy")
    op([0xEC])                              # in   al, dx
    op([0xA8, 0x20])                        # test al, 0x20      (transmit holding register empty?)
    op([0x74], ("rel8", "busy"))            # jz   busy
    op([0x58])                              # pop  ax
    op(bytes([0xBA]) + _u16(COM1))          # mov  dx, COM1
    op([0xEE])                              # out  dx, al
    op([0x5A])                              # pop  dx
    op([0xC3])                              # ret

    label("banner")
    op(BANNER + b"\0")                      # db "vmconsole serial console ok ", 0

    # Pass 1: addresses. Every fixup's size is fixed by its kind, so one pass suffices.
    sizes = {None: 0, "rel8": 1, "rel16": 2, "abs16": 2}
    labels, address = {}, LOAD_ADDRESS
    for item in p:
        if isinstance(item, str):
            labels[item] = address
        else:
            code, fixup = item
            address += len(code) + sizes[fixup[0] if fixup else None]
    # Pass 2: bytes. A displacement counts from the end of the instruction.
    image, address = bytearray(), LOAD_ADDRESS
    for item in p:
        if isinstance(item, str):
            continue
        code, fixup = item
        image += code
        address += len(code)
        if fixup:
            kind, target = fixup
            address += sizes[kind]
            if kind == "abs16":
                image += _u16(labels[target])
            elif kind == "rel16":
                image += _u16(labels[target] - address)
            else:
                delta = labels[target] - address
                if not -128 <= delta <= 127:
                    raise ValueError("short jump to %s out of range (%d)" % (target, delta))
                image += struct.pack("<b", delta)
    if len(image) > SECTOR_SIZE - 2:
        raise ValueError("boot sector code is %d bytes, at most %d fit" % (len(image), SECTOR_SIZE - 2))
    return bytes(image.ljust(SECTOR_SIZE - 2, b"\0") + b"\x55\xAA")


def write_image(path):
    """Write the raw disk image to ``path``: the boot sector, then zeros up to 1 MiB; mode 0644."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(boot_sector())
        f.truncate(IMAGE_SIZE)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: %s OUT.img\n" % argv[0])
        return 2
    write_image(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
