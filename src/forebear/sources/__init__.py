"""Where checkpoint bytes come from.

A ``ByteSource`` is one file read by byte range; a ``Location`` is a folder of
them: a local directory (``local``), or a hub repository or URL prefix read by
HTTP Range requests (``remote``, ``hub``; requests in ``http``, the range cache
in ``ranges``; imported on demand, since they pull in huggingface_hub). Formats
read only through these two, so every reader works the same on any location.
This package owns byte access and its bounds checks; it knows nothing of
tensors.
"""

from forebear.sources.base import ByteSource, Location
from forebear.sources.local import LocalDirectory, LocalFile, open_local
from forebear.sources.memory import MemorySource

__all__ = ["ByteSource", "LocalDirectory", "LocalFile", "Location", "MemorySource", "open_local"]
