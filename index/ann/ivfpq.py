"""``ivfpq``: ``IndexIVFPQ`` (d/8 sub-quantisers of 8 bits), about d/8+8 bytes a vector.

Its scores are approximate, so it asks for more candidates and the searcher
re-ranks them with the exact stored vectors (``rerank``).
"""

from __future__ import annotations

import faiss

from .base import SearchSettings
from .ivf import POINTS_PER_LIST, IVFIndex, nprobe_ladder

RERANK_DEPTHS = (100, 200, 400)  # candidates re-ranked with the exact vectors, for k = 10


def pq_subquantizers(d: int) -> int:
    """The largest divisor of d that is at most d/8 (48 for 384-d)."""
    return max(m for m in range(1, d // 8 + 1) if d % m == 0)


class IVFPQIndex(IVFIndex):
    kind = "ivfpq"
    min_training = 256 * POINTS_PER_LIST  # 8-bit codebooks
    rerank = True

    @classmethod
    def factory(cls, dimension: int, nlist: int) -> str:
        return f"IVF{nlist},PQ{pq_subquantizers(dimension)}x8"

    @classmethod
    def configure(cls, ivf: faiss.Index) -> None:
        ivf.do_polysemous_training = False  # polysemous codes are for Hamming filtering, unused here

    @classmethod
    def owns(cls, index: faiss.Index) -> bool:
        return isinstance(index, faiss.IndexIVFPQ)

    def candidates(self, k: int) -> int:
        return max(super().candidates(k), 10 * k, 100)

    def exact_limit(self, settings: SearchSettings) -> int:
        return 0  # its codes are approximations: the planner scores the stored vectors instead

    def score_ids(self, query, ids):
        return None

    def tuning_ladder(self) -> list[SearchSettings]:
        """Each nprobe with the default re-ranking depth, then deeper (PQ scores may put a true
        neighbour below the first candidates)."""
        return [SearchSettings(nprobe=n, rerank=depth) for n in nprobe_ladder(self.nlist)
                for depth in RERANK_DEPTHS]
