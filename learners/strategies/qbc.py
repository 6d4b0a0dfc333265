"""`qbc`: query by committee, with modAL's disagreement measures.

Committee. `n_members` linear heads (`learners.heads.train_head`, HeadConfig(kind="linear", epochs=epochs)), each
trained on a bootstrap sample of the labeled items (|L| draws with replacement from `rng`, then a head seed from
`rng`), on the features F. Every member gives class probabilities for the candidates (P itself is not read: it is
in `needs` only so that, before any head exists, the cold start falls back to random).

Disagreement (`measure`), per candidate, on the members' probabilities p_m (M members, C classes):
- "vote_entropy" (modAL `vote_entropy`): each member votes argmax_c p_m; the entropy (nats) of the vote shares.
- "max_disagreement" (modAL `KL_max_disagreement`): max over members of KL(p_m || mean_m p_m), each distribution
  normalised to sum 1 first, as scipy.stats.entropy does.
The B largest are picked (`top_k`: ties, common with vote entropy, break by a seeded random permutation; modAL's
`multi_argmax` takes whatever np.argpartition returns). Candidates are scored in row chunks (bounded memory), on
`device`. With no labeled item there is no committee: random picks, said in the note.

Multi-label: refused (ValueError "strategy 'qbc' has no multi-label rule"). specs/strategies.md names modAL's
`vote_entropy_sampling` / `max_disagreement_sampling`, which measure disagreement between one class distribution
per member (an argmax vote, a KL between softmax outputs); the spec gives no multi-label version and modAL has none.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs, random_selection, top_k
from learners.strategies.params import Param
from learners.strategies.registry import register
from learners.strategies.uncertainty import CHUNK_ELEMENTS

if TYPE_CHECKING:
    import torch

    from learners.heads import TrainedHead

MEASURES = ("vote_entropy", "max_disagreement")


def vote_entropy(member_probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the members' votes: member_probs (M, rows, C) -> (rows,) float64."""
    import torch

    members, _, classes = member_probs.shape
    votes = torch.nn.functional.one_hot(member_probs.argmax(dim=2), classes).sum(dim=0).double()
    shares = votes / members
    return -torch.special.xlogy(shares, shares).sum(dim=1)


def max_disagreement(member_probs: torch.Tensor) -> torch.Tensor:
    """Largest KL divergence of a member from the consensus (their mean): (M, rows, C) -> (rows,) float64."""
    import torch

    p = member_probs.double()
    consensus = p.mean(dim=0)
    consensus = consensus / consensus.sum(dim=1, keepdim=True)
    p = p / p.sum(dim=2, keepdim=True)
    kl = torch.where(p > 0, p * torch.log(p / consensus), 0.0).sum(dim=2)  # 0 log 0 = 0; consensus > 0 where p > 0
    return kl.amax(dim=0)


@register
class QBCStrategy(Strategy):
    name = "qbc"
    needs = frozenset({"probs", "features", "labels"})
    no_multi_label_reason = ("its committee measures (modAL's vote entropy and max disagreement) compare one class "
                             "distribution per member; specs/strategies.md gives qbc no multi-label rule")
    params = (
        Param("n_members", int, 5, "committee members (linear heads on bootstrap samples)", minimum=1),
        Param("measure", str, "vote_entropy", "how the committee's disagreement is measured", choices=MEASURES),
        Param("epochs", int, 20, "training epochs of each member", minimum=1),
    )

    def __init__(self, n_members: int = 5, measure: str = "vote_entropy", epochs: int = 20, device: str = "cpu",
                 chunk_rows: int | None = None) -> None:
        self.n_members = n_members
        self.measure = measure
        self.epochs = epochs
        self.device = device
        self.chunk_rows = chunk_rows

    def committee(self, inputs: StrategyInputs, rng: np.random.Generator) -> list[TrainedHead]:
        """The members: linear heads on bootstrap samples of the labeled items (bootstrap, then seed, per member)."""
        from learners.heads import HeadConfig, train_head  # noqa: PLC0415  (learners.heads loads torch)

        labeled, labels = np.asarray(inputs.labeled), np.asarray(inputs.labels)
        if labels.shape != labeled.shape:
            raise ValueError(f"labels and labeled must have the same length, got {len(labels)} and {len(labeled)}")
        members = []
        for _ in range(self.n_members):
            sample = rng.integers(0, len(labeled), size=len(labeled))
            config = HeadConfig(kind="linear", epochs=self.epochs, seed=int(rng.integers(2**31)))
            members.append(train_head(inputs.features[labeled[sample]], labels[sample], inputs.probs.shape[1],
                                      config, device=self.device))
        return members

    def disagreement(self, member_probs: torch.Tensor) -> torch.Tensor:
        """The chosen measure on member probabilities (M, rows, C) -> (rows,) float64."""
        return vote_entropy(member_probs) if self.measure == "vote_entropy" else max_disagreement(member_probs)

    def scores(self, members: list[TrainedHead], features: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        """Disagreement for `features[positions]`, computed in row chunks, as a float64 tensor on the device."""
        import torch

        device = torch.device(self.device)
        width = len(members) * members[0].num_classes
        chunk_rows = self.chunk_rows or max(1, CHUNK_ELEMENTS.get(device.type, 2**26) // width)
        out = torch.empty(len(positions), dtype=torch.float64, device=device)
        for start in range(0, len(positions), chunk_rows):
            rows = features[positions[start:start + chunk_rows]]
            member_probs = np.stack([member.predict_proba(rows) for member in members])
            out[start:start + len(rows)] = self.disagreement(torch.from_numpy(member_probs).to(device))
        return out

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        if len(inputs.labeled) == 0:
            picks = random_selection(inputs.candidates, budget, rng)
            picks.note = "no labeled item yet: qbc has no committee and fell back to random"
            return picks
        members = self.committee(inputs, rng)
        scores = self.scores(members, inputs.features, inputs.candidates)
        order = top_k(scores, budget, rng).cpu().numpy()
        return Selection(inputs.candidates[order], scores[order].cpu().numpy(), [self.name] * budget)
