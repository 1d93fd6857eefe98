"""docs/log-format.md against the code: its tables and worked example are what the code does.

The worked example's inputs (a ```json worked-example block) and bytes (the ```hex block) are
parsed out of the markdown; the encoder must produce exactly those bytes and the decoders must
read them back to those inputs. The header, frame, record-type and body-tag tables are checked
field by field against the same bytes and the event types.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pilog.errors import CorruptionError, FormatVersionError
from pilog.events import (
    BODY_TYPES,
    Event,
    Record,
    decode_event,
    encode_record,
    event_id,
)
from pilog.log import naming
from pilog.log import writer as writer_module
from pilog.log.format import (
    FORMAT_VERSION,
    FRAME_HEADER_BYTES,
    FRAME_RECORD,
    FRAME_TYPES,
    HEADER_FIXED_BYTES,
    MAGIC,
    MAX_DEVICE_ID_BYTES,
    MAX_PAYLOAD_BYTES,
    FrameStatus,
    SegmentHeader,
    decode_header,
    encode_frame,
    frame_size,
    scan_frames,
)
from pilog.log.reader import HEADER_READ_BYTES, LogReader
from pilog.log.repair import open_log
from pilog.log.writer import LogOptions

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "log-format.md"
_DUMP_LINE = re.compile(r"^\s*(\d+)  ([0-9a-f]{2}(?: [0-9a-f]{2})*)(?:\s{2,}\S.*)?$")


# -- reading the markdown ----------------------------------------------------------------


@functools.cache
def doc() -> str:
    return DOC_PATH.read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The text under `## heading`, up to the next second-level heading."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", doc(), re.M | re.S)
    assert m, f"docs/log-format.md has no section '## {heading}'"
    return m.group(1)


def fenced(info: str) -> str:
    """The body of the one fenced code block whose info string is `info`."""
    blocks = re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", doc(), re.M | re.S)
    assert len(blocks) == 1, f"expected one ```{info} block, found {len(blocks)}"
    return str(blocks[0])


def table(heading: str) -> list[dict[str, str]]:
    """The first markdown table of a section, one dict per row keyed by the header cells."""
    lines = [ln.strip() for ln in section(heading).splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip().replace("`", "") for c in ln.strip("|").split("|")])
    head, sep, *body = rows
    assert all(set(c) <= set("-: ") for c in sep), f"no header separator in {heading}"
    return [dict(zip(head, r, strict=True)) for r in body]


def dumped_bytes() -> bytes:
    """The bytes of the hex dump, checking that every line's offset is where it sits."""
    data = bytearray()
    for line in fenced("hex").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DUMP_LINE.match(line)
        assert m, f"unparsable hex dump line: {line!r}"
        assert int(m.group(1)) == len(data), f"offset {m.group(1)} should be {len(data)}"
        data += bytes.fromhex(m.group(2))
    return bytes(data)


@functools.cache
def inputs() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(fenced("json worked-example"))
    return result


def body_class(type_name: str) -> type[Any]:
    by_name = {name: cls for cls, name in BODY_TYPES.items()}
    return by_name[type_name]


def stated_header() -> SegmentHeader:
    h = inputs()["header"]
    return SegmentHeader(
        epoch=bytes.fromhex(h["epoch"]),
        base_seq=h["base_seq"],
        created_ns=h["created_ns"],
        device_id=h["device_id"],
        version=h["version"],
    )


def stated_record() -> Record:
    e = inputs()["event"]
    body = body_class(e["type"])(**e["body"])
    return Record(e["ts_ns"], e["mono_ns"], bytes.fromhex(e["boot_id"]), body)


def split_example() -> tuple[bytes, bytes, bytes]:
    """(header, frame, payload) of the dump, cut where the dump's own fields say."""
    data = dumped_bytes()
    header_len = int.from_bytes(data[10:12], "little")
    frame = data[header_len:]
    return data[:header_len], frame, frame[FRAME_HEADER_BYTES:]


def size_expr(text: str, env: dict[str, int]) -> int:
    """`46`, `n` or `46 + n` as an integer, names looked up in `env`."""
    total = 0
    for term in (t.strip() for t in text.split("+")):
        total += int(term) if term.isdigit() else env[term]
    return total


def decode_field(raw: bytes, encoding: str) -> object:
    if encoding == "bytes":
        return raw
    if encoding == "UTF-8":
        return raw.decode()
    m = re.fullmatch(r"u(8|16|32|64)(?: LE)?", encoding)
    assert m, f"unknown encoding {encoding!r}"
    bits = int(m.group(1))
    assert len(raw) * 8 == bits, f"{encoding} field of {len(raw)} bytes"
    assert bits == 8 or encoding.endswith(" LE"), "multi-byte integers must state byte order"
    return int.from_bytes(raw, "little")


def check_layout(rows: list[dict[str, str]], data: bytes, env: dict[str, int]) -> dict[str, Any]:
    """Decode `data` by a layout table; the rows must tile it from offset 0 to its end."""
    fields: dict[str, Any] = {}
    at = 0
    for row in rows:
        offset, size = size_expr(row["offset"], env), size_expr(row["size"], env)
        assert offset == at, f"{row['field']} at {offset}, previous field ends at {at}"
        fields[row["field"]] = decode_field(data[offset : offset + size], row["encoding"])
        at = offset + size
    assert at == len(data), f"the table covers {at} of {len(data)} bytes"
    return fields


def stated_number(pattern: str, text: str | None = None) -> int:
    m = re.search(pattern, text if text is not None else doc())
    assert m, f"docs/log-format.md does not state /{pattern}/"
    return int(m.group(1), 0)


def crc32_by_definition(data: bytes, poly: int, init: int, xor_out: int) -> int:
    """Bitwise reflected CRC-32, straight from the parameters the doc states."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
    return crc ^ xor_out


# -- the worked example ------------------------------------------------------------------


def test_worked_example_is_exactly_what_the_encoder_writes() -> None:
    payload = encode_record(stated_record())
    frame = inputs()["frame"]
    encoded = stated_header().encode() + encode_frame(frame["seq"], payload, frame["type"])
    assert encoded.hex(" ") == dumped_bytes().hex(" ")


def test_worked_example_decodes_back_to_the_stated_inputs() -> None:
    data = dumped_bytes()
    segment = inputs()["segment_file"]
    header = decode_header(data, segment)
    assert header == stated_header()
    assert header.size == len(split_example()[0])

    frames: list[tuple[int, Any]] = []
    result = scan_frames(data, header.size, header.base_seq, frames)
    assert (result.status, result.offset) == (FrameStatus.END, len(data))
    assert [seq for seq, _ in frames] == [inputs()["frame"]["seq"]]
    seq, payload = frames[0]
    assert bytes(payload) == split_example()[2]

    r = stated_record()
    assert decode_event(seq, payload) == Event(seq, r.ts_ns, r.mono_ns, r.boot_id, r.body)
    assert decode_event(seq, payload).type == inputs()["event"]["type"]
    assert event_id(header.device_id, header.epoch_hex, seq) == inputs()["event_id"]


def test_worked_example_followed_by_preallocated_zeros_ends_at_the_zeros() -> None:
    data = dumped_bytes()
    frames: list[tuple[int, Any]] = []
    result = scan_frames(data + bytes(4096), len(split_example()[0]), 1200, frames)
    assert (result.status, result.offset, len(frames)) == (FrameStatus.ZERO, len(data), 1)


def test_worked_example_is_a_readable_segment_file_under_its_stated_name(tmp_path: Path) -> None:
    name = inputs()["segment_file"]
    base = inputs()["header"]["base_seq"]
    assert naming.segment_name(base) == name
    assert naming.parse_segment_name(name) == base
    (tmp_path / name).write_bytes(dumped_bytes() + bytes(64 * 1024))  # as preallocated

    reader = LogReader(tmp_path)
    records = [(seq, bytes(p)) for seq, p in reader.read_from(0)]
    assert records == [(inputs()["frame"]["seq"], split_example()[2])]
    report = reader.verify()
    assert report.ok, report.errors
    assert (report.records, report.first_seq, report.last_seq) == (1, base, base)


def test_stated_frame_size_of_the_reference_reading() -> None:
    m = re.search(
        r"costs (\d+) bytes in the log: (\d+) of frame header and (\d+) of payload", doc()
    )
    assert m, "the doc states the frame size of the reference reading"
    total, head, body = map(int, m.groups())
    payload = split_example()[2]
    assert (head, body, total) == (FRAME_HEADER_BYTES, len(payload), frame_size(len(payload)))


# -- the tables --------------------------------------------------------------------------


def test_segment_header_table_describes_the_example_header() -> None:
    header, _, _ = split_example()
    h = stated_header()
    n = len(h.device_id.encode())
    rows = table("Segment header")
    fields = check_layout(rows, header, {"n": n})
    assert fields == {
        "magic": MAGIC,
        "version": FORMAT_VERSION,
        "flags": 0,
        "header_len": len(header),
        "epoch": h.epoch,
        "base_seq": h.base_seq,
        "created_ns": h.created_ns,
        "id_len": n,
        "device_id": h.device_id,
        "crc": zlib.crc32(header[:-4]),
    }
    by_field = {r["field"]: r for r in rows}
    assert by_field["magic"]["meaning"] == MAGIC.decode()
    assert size_expr(by_field["device_id"]["offset"], {"n": n}) == HEADER_FIXED_BYTES
    assert f"{HEADER_FIXED_BYTES + 4} + n" in by_field["header_len"]["meaning"]


def test_header_size_limits_are_as_stated() -> None:
    longest = SegmentHeader(bytes(16), 0, 0, "x" * MAX_DEVICE_ID_BYTES)
    assert stated_number(r"length of the device id in bytes \(1 to (\d+)\)") == MAX_DEVICE_ID_BYTES
    assert stated_number(r"A header is at most (\d+) bytes") == longest.size
    assert stated_number(r"read the first (\d+) bytes of a segment") == HEADER_READ_BYTES
    assert longest.size <= HEADER_READ_BYTES
    with pytest.raises(ValueError, match="device id"):
        SegmentHeader(bytes(16), 0, 0, "x" * (MAX_DEVICE_ID_BYTES + 1)).encode()


def test_frame_table_describes_the_example_frame() -> None:
    _, frame, payload = split_example()
    rows = table("Frames")
    fields = check_layout(rows, frame, {"length": len(payload)})
    assert fields == {
        "crc": zlib.crc32(frame[4:]),
        "length": len(payload),
        "seq": inputs()["frame"]["seq"],
        "type": FRAME_RECORD,
        "payload": payload,
    }
    by_field = {r["field"]: r for r in rows}
    assert size_expr(by_field["payload"]["offset"], {}) == FRAME_HEADER_BYTES
    assert 1 << stated_number(r"\(2\^(\d+)\)", by_field["length"]["meaning"]) == MAX_PAYLOAD_BYTES


def test_record_types_table_lists_exactly_the_frame_types() -> None:
    rows = table("Record types")
    assert {int(r["type"]) for r in rows} == FRAME_TYPES
    assert {int(r["type"]): r["name"] for r in rows}[FRAME_RECORD] == "record"


def test_body_tag_table_matches_the_event_types() -> None:
    rows = table("Payload: events")
    assert len(rows) == len(BODY_TYPES)
    by_tag = {int(r["tag"]): r for r in rows}
    for cls, name in BODY_TYPES.items():
        row = by_tag[cls.__struct_config__.tag]
        assert row["type"] == name
        stated = [part.strip() for part in row["fields"].split(",")]
        assert [s.split("=")[0].strip() for s in stated] == list(cls.__struct_fields__)
        defaults = [
            json.loads(s.split("=")[1].strip().replace("nil", "null")) for s in stated if "=" in s
        ]
        assert defaults == list(cls.__struct_defaults__), name
        assert all("=" in s for s in stated[len(stated) - len(defaults) :]), name


# -- checksum and versioning -------------------------------------------------------------


def test_checksum_is_the_stated_crc32_over_the_stated_bytes() -> None:
    text = section("Frames")
    poly = stated_number(r"reflected polynomial\s+(0x[0-9A-Fa-f]+)", text)
    init = stated_number(r"initial value (0x[0-9A-Fa-f]+)", text)
    xor_out = stated_number(r"final XOR (0x[0-9A-Fa-f]+)", text)
    check = stated_number(r"`123456789` is (0x[0-9A-Fa-f]+)", text)
    assert crc32_by_definition(b"123456789", poly, init, xor_out) == check
    assert zlib.crc32(b"123456789") == check

    header, frame, _ = split_example()
    stored = int.from_bytes(frame[:4], "little")
    assert stored == crc32_by_definition(frame[4:], poly, init, xor_out)  # bytes 4 .. end
    assert int.from_bytes(header[-4:], "little") == crc32_by_definition(
        header[:-4], poly, init, xor_out
    )
    # Every byte the doc says is covered is covered: flipping any one of them is caught.
    for i in range(4, len(frame)):
        damaged = bytearray(frame)
        damaged[i] ^= 0x01
        assert zlib.crc32(bytes(damaged[4:])) != stored


def test_a_whole_header_of_another_version_is_refused_as_a_newer_format() -> None:
    assert stated_number(r"this\s+page describes version (\d+)") == FORMAT_VERSION
    segment = inputs()["segment_file"]
    newer = SegmentHeader(bytes(16), 0, 0, "d", version=FORMAT_VERSION + 1).encode()
    with pytest.raises(FormatVersionError) as raised:
        decode_header(newer, segment)
    assert (raised.value.segment, raised.value.version) == (segment, FORMAT_VERSION + 1)


def test_a_damaged_version_byte_is_a_damaged_header_not_a_newer_format() -> None:
    assert "checked after the header checksum" in " ".join(section("Versioning").split())
    at = size_expr({r["field"]: r for r in table("Segment header")}["version"]["offset"], {})
    data = bytearray(dumped_bytes())
    data[at] = FORMAT_VERSION + 1  # the header checksum is now wrong too
    header_len = len(split_example()[0])
    with pytest.raises(CorruptionError) as raised:
        decode_header(bytes(data), inputs()["segment_file"])
    assert (raised.value.offset, raised.value.reason) == (
        header_len - 4,
        "header checksum mismatch",
    )


def test_the_writer_frames_with_the_encoder_the_example_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def spy(seq: int, payload: bytes, frame_type: int = FRAME_RECORD) -> bytes:
        calls.append(seq)
        return encode_frame(seq, payload, frame_type)

    monkeypatch.setattr(writer_module, "encode_frame", spy)
    # A log whose newest segment is the example's header alone: the writer appends after it.
    name = inputs()["segment_file"]
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / name).write_bytes(stated_header().encode())
    opts = LogOptions(device_id=stated_header().device_id, preallocate=False)
    writer, _ = open_log(tmp_path / "log", tmp_path / "quarantine", opts)
    try:
        assert writer.append(encode_record(stated_record())) == inputs()["frame"]["seq"]
        writer.sync()
    finally:
        writer.close()
    assert calls == [inputs()["frame"]["seq"]]
    assert (tmp_path / "log" / name).read_bytes().hex(" ") == dumped_bytes().hex(" ")


def test_trailing_fields_unknown_to_this_reader_are_skipped_as_stated() -> None:
    assert "an older reader skips trailing fields it does not know" in " ".join(doc().split())
    r = stated_record()
    body = [r.body.__struct_config__.tag, *msgspec.structs.astuple(r.body), "a later field"]
    newer = msgspec.msgpack.encode([r.ts_ns, r.mono_ns, r.boot_id, body, "a later field"])
    assert decode_event(7, newer) == Event(7, r.ts_ns, r.mono_ns, r.boot_id, r.body)
