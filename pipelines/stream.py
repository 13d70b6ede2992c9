"""A stream file: the tasks that arrive, in order, on one backbone, with the baselines beside them.

    backbone: minilm
    defaults:                 # any option of `continual learn`, spelt with _ (or -)
      steps: 150
      lr: 1.0e-3
      max_train: 1000
    baselines: [sequential-ft, shared-prefix]   # or {name: sequential-ft, lr: 5.0e-5}
    arrivals:
      - dataset: sms_spam     # a built-in dataset; the task is named after it
      - name: tickets         # or files, relative to this stream file
        train: data/tickets-train.jsonl
        eval: data/tickets-eval.jsonl
        text_field: body
        label_field: queue
        steps: 300            # per-arrival overrides win over the defaults

Parsing validates everything a file can get wrong (unknown keys, a missing name or data source,
duplicate names, out-of-range values) and says where, before any arrival starts.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continual.train import TrainConfig
from pipelines.arrival import reeval
from pipelines.arrival.plan import INIT, PREFIX_LENGTH, ArrivalPlan, BaselinePlan, number
from pipelines.tune import TuneSpace
from registry.streams import DEFAULT_STREAM, check_stream
from tasks.errors import ConfigError, ContinualError
from tasks.load import DataArgs

DATA_KEYS = (
    "dataset",
    "train",
    "eval",
    "kind",
    "text_field",
    "label_field",
    "target_field",
    "description",
    "max_train",
    "max_eval",
)
PREFIX_KEYS = ("prefix_length", "positions", "init")
REEVAL_KEYS = ("reeval", "audit_k")  # how earlier tasks are re-evaluated: pipelines.arrival.reeval
STATE_KEYS = ("training_state",)  # keep the training state for --resume (default true)
TRAIN_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "seed",
    "eval_every",
    "patience",
    "max_length",
    "max_target_length",
    "val_max",
    "eval_batch_size",
)
TUNE_KEYS = (
    "tune",
)  # a search per arrival: trials, or {trials, lengths, lr, ...} (pipelines.tune)
#: the per-task module: `module: lora`, or `module: {kind: lora, rank: 4, ...}` (its options)
MODULE_KEYS = ("module",)
OPTION_KEYS = (
    DATA_KEYS + PREFIX_KEYS + REEVAL_KEYS + TRAIN_KEYS + TUNE_KEYS + STATE_KEYS + MODULE_KEYS
)
TOP_KEYS = ("name", "description", "backbone", "defaults", "baselines", "arrivals", "executor")
EXECUTORS = ("local", "ray")  # where `stream run` runs the arrivals: here, or as Ray tasks


@dataclass(frozen=True)
class StreamSpec:
    """A whole stream: the backbone, its arrivals in order, the baselines beside them."""

    backbone: str
    arrivals: tuple[ArrivalPlan, ...]
    baselines: tuple[BaselinePlan, ...] = ()
    name: str = DEFAULT_STREAM
    description: str = ""
    source: str = ""
    executor: str = "local"  # or "ray" (a local Ray instance) or "ray://…"/"ray:ADDRESS"

    def __post_init__(self) -> None:
        executor_address(self.executor, self.source or "stream")
        seen: dict[str, str] = {}  # names compared without case, as the registry does
        for a in self.arrivals:
            twin = seen.get(a.name.lower())
            if twin == a.name:
                raise ConfigError(f"{self.source or 'stream'}: task {a.name} arrives twice")
            if twin is not None:
                raise ConfigError(
                    f"{self.source or 'stream'}: task {a.name} differs from task {twin} only "
                    "in case; give it another name"
                )
            seen[a.name.lower()] = a.name
        if len({b.name for b in self.baselines}) != len(self.baselines):
            raise ConfigError(f"{self.source or 'stream'}: a baseline is listed twice")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "backbone": self.backbone,
            "baselines": [b.to_dict() for b in self.baselines],
            "arrivals": [a.to_dict() for a in self.arrivals],
            "source": self.source,
            "executor": self.executor,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamSpec:
        return cls(
            name=d.get("name", DEFAULT_STREAM),
            description=d.get("description", ""),
            backbone=d["backbone"],
            baselines=tuple(BaselinePlan.from_dict(b) for b in d.get("baselines", ())),
            arrivals=tuple(ArrivalPlan.from_dict(a) for a in d["arrivals"]),
            source=d.get("source", ""),
            executor=d.get("executor", "local"),
        )


def executor_address(executor: str, where: str) -> str | None:
    """`local` -> None; `ray` -> "" (a local Ray instance); `ray:ADDRESS` -> ADDRESS."""
    kind, _, address = str(executor).partition(":")
    if kind not in EXECUTORS or (kind == "local" and address):
        raise ConfigError(
            f"{where}: executor must be local, ray (a local Ray instance) or ray:ADDRESS "
            f"(e.g. ray:auto, ray:ray://head:10001), not {executor!r}"
        )
    return None if kind == "local" else address


def load_stream(path: str | Path) -> StreamSpec:
    """Read and validate a stream file (YAML or JSON); files named in it are relative to it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: stream file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the file's syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a stream file is a mapping with backbone and arrivals")
    _known(doc, TOP_KEYS, f"{path}")
    if not isinstance(doc.get("backbone"), str) or not doc["backbone"]:
        raise ConfigError(f"{path}: 'backbone' is missing (e.g. backbone: minilm)")
    defaults = check_options(doc.get("defaults") or {}, f"{path}: defaults", allow_name=False)
    arrivals = doc.get("arrivals")
    if not isinstance(arrivals, list) or not arrivals:
        raise ConfigError(f"{path}: 'arrivals' must be a non-empty list of tasks")
    plans = []
    for i, raw in enumerate(arrivals):
        label = raw.get("name") or raw.get("dataset") if isinstance(raw, dict) else None
        where = f"{path}: arrivals[{i}]" + (f" ({label})" if label else "")
        try:
            opts = {**defaults, **check_options(raw, where, allow_name=True)}
            plans.append(arrival_plan(opts, base=path.parent, where=where))
        except ContinualError as e:
            msg = str(e)
            raise type(e)(msg if msg.startswith(str(path)) else f"{where}: {msg}") from None
    baselines = doc.get("baselines") or []
    if not isinstance(baselines, list):
        raise ConfigError(f"{path}: 'baselines' must be a list, e.g. [sequential-ft]")
    try:
        return StreamSpec(
            name=check_stream(str(doc.get("name") or DEFAULT_STREAM)),
            description=str(doc.get("description") or ""),
            backbone=doc["backbone"],
            arrivals=tuple(plans),
            baselines=tuple(BaselinePlan.from_dict(b) for b in baselines),
            source=str(path.resolve()),
            executor=str(doc.get("executor") or "local"),
        )
    except ContinualError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def arrival_plan(opts: dict[str, Any], *, base: Path | None = None, where: str = "") -> ArrivalPlan:
    """An `ArrivalPlan` from option keys (those of OPTION_KEYS, plus `name`). Relative file
    paths are taken relative to `base` (the stream file's folder), else the working folder."""
    opts = dict(opts)
    if opts.get("label_field") and opts.get("target_field"):
        raise ConfigError(f"{where}: give label_field or target_field, not both")
    if bool(opts.get("dataset")) == bool(opts.get("train")):
        raise ConfigError(
            f"{where}: give the data as 'dataset: NAME' (built-in) or 'train: FILE', one of them"
        )
    name = opts.get("name") or opts.get("dataset")
    if not name:
        raise ConfigError(f"{where}: 'name' is missing (required with train: FILE)")
    data = DataArgs(
        dataset=opts.get("dataset"),
        train=resolve_path(opts.get("train"), base),
        eval=resolve_path(opts.get("eval"), base),
        kind=opts.get("kind", "classification"),
        text_field=opts.get("text_field") or "",
        target_field=opts.get("label_field") or opts.get("target_field") or "",
        description=opts.get("description") or "",
        max_train=opts.get("max_train"),
        max_eval=opts.get("max_eval"),
        seed=int(opts.get("seed", 0)),
    )
    config = TrainConfig(**{k: opts[k] for k in TRAIN_KEYS if k in opts})
    return ArrivalPlan(
        name=str(name),
        data=data,
        config=config,
        prefix_length=int(opts.get("prefix_length", PREFIX_LENGTH)),
        positions=opts.get("positions"),
        init=str(opts.get("init", INIT)),
        reeval=str(opts.get("reeval", reeval.AUTO)),
        audit_k=opts.get("audit_k", reeval.AUDIT_K),
        tune=None
        if opts.get("tune") is None
        else TuneSpace.from_dict(opts["tune"], f"{where}: tune"),
        training_state=opts.get("training_state", True),
        **module_of(opts.get("module"), where),
    )


def module_of(raw: Any, where: str) -> dict[str, Any]:
    """`module` and `module_options` of an `ArrivalPlan` from an entry's `module:` (a kind's
    name, or a mapping of `kind` and the kind's options)."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        return {"module": raw}
    if isinstance(raw, dict) and isinstance(raw.get("kind"), str):
        return {
            "module": raw["kind"],
            "module_options": {k: v for k, v in raw.items() if k != "kind"},
        }
    raise ConfigError(
        f"{where}: module must be a kind's name (e.g. lora) or a mapping with kind: NAME and "
        f"its options, got {raw!r}"
    )


def in_order(spec: StreamSpec, order: int | None) -> StreamSpec:
    """The stream with its arrivals in order `order`: 0 (or None) the file's, k >= 1 a
    permutation seeded by k (the field reports a stream in several task orders). Run each order
    in its own workspace (`--home`): a task arrives once per workspace."""
    if not order:
        return spec
    if order < 0:
        raise ConfigError(f"--order must be 0 (the file's) or a positive seed, got {order}")
    import random
    from dataclasses import replace

    arrivals = list(spec.arrivals)
    random.Random(order).shuffle(arrivals)
    return replace(spec, arrivals=tuple(arrivals))


def resolve_path(value: Any, base: Path | None) -> str | None:
    """A data file as an absolute path (so a later process anywhere finds it); a hub id
    (no such file, no extension) is kept as given."""
    if value is None:
        return None
    text = str(value)
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = (base or Path.cwd()) / candidate
    if candidate.exists() or Path(text).suffix:
        return str(candidate.resolve())
    return text


_INT_KEYS = {
    "audit_k",
    "max_train",
    "max_eval",
    "prefix_length",
    "steps",
    "batch_size",
    "seed",
    "eval_every",
    "patience",
    "max_length",
    "max_target_length",
    "val_max",
    "eval_batch_size",
}


def check_options(
    raw: Any, where: str, *, allow_name: bool, allowed: tuple[str, ...] = OPTION_KEYS
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(raw).__name__}")
    out = {str(k).replace("-", "_"): v for k, v in raw.items()}
    allowed = allowed + (("name",) if allow_name else ())
    _known(out, allowed, where)
    for k, v in out.items():
        if k in _INT_KEYS and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{where}: {k} must be a whole number, got {v!r}")
        if k == "lr":
            out[k] = number(v, where)
    return out


def _known(d: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
            )
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def precheck(spec: StreamSpec) -> None:
    """Catch a misspelt dataset, a missing file or an option the backbone cannot take (a prefix
    longer than its context, a LoRA target it lacks) now, not hours into the stream (each
    arrival's data is still validated in full when it arrives)."""
    from tasks import catalog

    for plan in spec.arrivals:
        if plan.data.dataset:
            catalog.get(plan.data.dataset)
        for path in (plan.data.train, plan.data.eval):
            if path and Path(path).is_absolute() and not Path(path).exists():
                raise ConfigError(
                    f"{spec.source}: arrival {plan.name}: {path}: file not found; fix the path "
                    "(relative paths are read from the stream file's folder)"
                )
    where = spec.source or "stream"
    check_on_backbone(spec.arrivals, spec.backbone, where=where, strict=spec.executor == "local")


def check_on_backbone(
    plans: tuple[ArrivalPlan, ...], backbone: str, *, where: str, strict: bool
) -> None:
    """Each plan's module and search against `backbone`'s shapes (`continual.skeleton`: its
    config, no weights; the plugins' own rules). A backbone this machine cannot read is refused
    when `strict` (this machine runs the jobs) and skipped otherwise: a Ray stream's workers or
    the HTTP server's may see folders this one does not, and each job checks it when it runs."""
    from pipelines.arrival.plan import check_plan

    at = f"{where}: " if where else ""
    try:
        skeleton = _skeleton(backbone)
    except ContinualError as e:
        if not strict:
            return
        raise ConfigError(f"{at}{e}") from None
    for plan in plans:
        try:
            check_plan(skeleton, plan)
        except ConfigError as e:
            said, mine = str(e), f"arrival {plan.name}: "
            raise ConfigError(f"{at}{said if said.startswith(mine) else mine + said}") from None


def _skeleton(backbone: str) -> Any:
    """The skeleton of `backbone`, read once per process; a local folder's is read again when
    its config.json changes (another model saved under the same path)."""
    config = Path(backbone).expanduser() / "config.json"
    return _read_skeleton(backbone, config.stat().st_mtime_ns if config.is_file() else None)


@functools.lru_cache(maxsize=8)
def _read_skeleton(backbone: str, stamp: int | None) -> Any:
    from continual.skeleton import skeleton_backbone

    return skeleton_backbone(backbone)
