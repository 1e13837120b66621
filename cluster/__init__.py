"""headline-cluster: group near-duplicate news headlines into stories (Arabic first, any language).

>>> from cluster import collapse
>>> result = collapse(["Storm Ada forces evacuations", "WATCH: Storm Ada forces evacuations"])
>>> result.selected
['Storm Ada forces evacuations']
"""

from .embed import Embedder, EmbeddingCache
from .errors import HeadlineClusterError, InputError, ModelLoadError
from .normalize import normalize
from .stories import CollapseResult, Explanation, Member, Story, collapse

__version__ = "0.1.0"
__all__ = [
    "CollapseResult",
    "Embedder",
    "EmbeddingCache",
    "Explanation",
    "HeadlineClusterError",
    "InputError",
    "Member",
    "ModelLoadError",
    "Story",
    "collapse",
    "normalize",
]
