"""Image sets and safe decoding (see :mod:`aevis_core.data.imagesets`, :mod:`.decode`)."""

from aevis_core.data.decode import ALLOWED_FORMATS, DecodeLimits, decode_image
from aevis_core.data.imagesets import DEMO_ROOT, ImageSet, demo_path, load_image_set
from aevis_core.data.uploads import UploadLimits, UploadResult, read_uploads, save_image_set

__all__ = [
    "ALLOWED_FORMATS", "DEMO_ROOT", "DecodeLimits", "ImageSet", "UploadLimits", "UploadResult", "decode_image",
    "demo_path", "load_image_set", "read_uploads", "save_image_set",
]
