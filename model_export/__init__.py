"""PyTorch <-> ONNX <-> board weight-pack conversion.

    from model_export import pack_state_dict, write_pack, read_pack, load_into
    write_pack("w.tlpack", pack_state_dict(model.state_dict(), model.cfg))   # int16 + fracs, checksummed
    load_into(model, read_pack("w.tlpack"))                                  # PackError on any defect

ONNX: `model_export.onnx_export.export_onnx`; checkpoints: `model_export.checkpoint`; CLI:
`trilevel export onnx|pack|import|inspect`. The pack format is specified in `model_export.pack`.
"""

from model_export.pack import (
    PACK_VERSION,
    ExportError,
    Pack,
    PackedTensor,
    PackError,
    config_from_json,
    decode_pack,
    encode_pack,
    load_into,
    pack_state_dict,
    read_pack,
    unpack_state_dict,
    write_pack,
)

__all__ = [
    "PACK_VERSION",
    "ExportError",
    "Pack",
    "PackError",
    "PackedTensor",
    "config_from_json",
    "decode_pack",
    "encode_pack",
    "load_into",
    "pack_state_dict",
    "read_pack",
    "unpack_state_dict",
    "write_pack",
]
