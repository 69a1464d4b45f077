"""Image and text encoders behind one interface (see base.Encoder). Importing this
package is cheap: torch, timm and open_clip load when an encoder is built."""

from localq.encoders.base import DEFAULT_SPEC, Encoder, file_sha256
from localq.encoders.factory import load_encoder

__all__ = ["DEFAULT_SPEC", "Encoder", "file_sha256", "load_encoder"]
