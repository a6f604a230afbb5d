#!/usr/bin/env python3
"""Blank, in a CUDA shared library's .nv_fatbin section, every device-code entry except the cubins of
one architecture, so the library compresses to a size that fits the GPU machine's 64 MiB transfer.

onnxruntime-gpu's libonnxruntime_providers_cuda.so (284 MB) carries cubins for sm_75 to sm_120; an
H100 (sm_90) loads only the sm_90 ones. Blanking keeps every header, offset and size as they were (the
driver still parses the whole fatbin and picks sm_90), and zero bytes compress to nothing. A fatbin
with no sm_90 cubin is left whole.

    python3 benches/fatbin_keep_arch.py IN OUT [ARCH=90]
"""
import collections
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50
KIND_CUBIN = 2


def fatbin_section(data):
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    header = lambda i: struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
    names = header(shstrndx)[4]
    for i in range(shnum):
        h = header(i)
        name = data[names + h[0]:data.index(b"\0", names + h[0])]
        if name == b".nv_fatbin":
            return h[4], h[4] + h[5]
    raise SystemExit("no .nv_fatbin section")


def fatbins(data, start, end):
    """Yields each fatbin's entries as (kind, arch, payload offset, payload size)."""
    pos = start
    while pos < end:
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fatbins are 8-byte aligned, with padding between them
            continue
        entries, e, stop = [], pos + header_size, pos + header_size + size
        while e < stop:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, e)
            if entry_header == 0:
                break
            arch, = struct.unpack_from("<I", data, e + 28)
            entries.append((kind, arch, e + entry_header, payload))
            e += entry_header + payload
        yield entries
        pos = stop


def main():
    src, dst = sys.argv[1], sys.argv[2]
    keep = int(sys.argv[3]) if len(sys.argv) > 3 else 90
    data = bytearray(open(src, "rb").read())
    kept, blanked, whole = collections.Counter(), 0, 0
    for entries in fatbins(data, *fatbin_section(data)):
        if not any(kind == KIND_CUBIN and arch == keep for kind, arch, _, _ in entries):
            whole += 1
            continue
        for kind, arch, offset, size in entries:
            if kind == KIND_CUBIN and arch == keep:
                kept[arch] += size
            else:
                data[offset:offset + size] = bytes(size)
                blanked += size
    open(dst, "wb").write(data)
    print(f"kept {kept[keep] / 1e6:.1f} MB of sm_{keep} cubins, blanked {blanked / 1e6:.1f} MB, "
          f"left {whole} fatbins without an sm_{keep} cubin whole")


if __name__ == "__main__":
    main()
