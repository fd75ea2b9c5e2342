"""`float_fallback`: which layers an int8 model keeps in float, and how `auto` finds the fewest.

No TensorFlow here: the search is given a function that quantizes the calibrated model with a
set of layers kept in float and checks the result against the thresholds (convert.py makes it
from one calibration, so a trial costs a quantization pass and a LiteRT run, not a conversion).

Why layers come in groups. A layer kept in float still hands its consumers a tensor quantized
with that tensor's calibrated scale; when the scale is the problem (outlier activations: one
huge channel, every other channel rounded to zero), keeping the producer alone, or a consumer
alone, changes nothing. So the search ranks *tensors* by what quantizing them costs
(`layer_error`: the larger of the tensor's own rounding error and the error its producer adds
to what it reads, both relative to the signal per channel and counted up to 100%: beyond that
an output is noise whatever its size) and keeps a tensor in float by keeping its producer and
every consumer in float.

The search (`search`), deterministic for the same inputs (ties go to graph order):
1. the chain: starting from the last chosen set (or none), add the groups in rank order,
   skipping a group that would pass `max_float_layers`: S0 ⊆ S1 ⊆ ... ⊆ Sk;
2. S0 passes: go to 4. Sk fails: rejected, with the best trial (fewest failed thresholds, then
   the best accuracy / top-1 agreement / cosine) and every set tried;
3. bisection for the shortest passing prefix (more float is assumed not to hurt; where it does,
   step 4 still returns a set that passes);
4. pruning: each layer of the set, least important first, is dropped if the rest still passes,
   so no single layer of the result can go.
Trials are memoized: about 2 + log2(k) + |set| of them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from tfbuild.errors import ConversionFailed, UserError

if TYPE_CHECKING:  # numpy and LiteRT stay out of the planning path (state.py imports this module)
    from tfbuild.layer_error import Graph

RANKED_IN_REPORT = 10
INTEGER_DTYPES = ("int8", "uint8", "int16")  # = verify.INTEGER_DTYPES, without importing numpy here


@dataclass
class Trial:
    layers: tuple[str, ...]  # ops kept in float, by output tensor name
    model: bytes
    metrics: dict
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Unit:
    """A tensor whose quantization costs accuracy, and the ops that keep it in float."""
    tensor: str
    op: str
    score: float
    ops: tuple[str, ...]  # its producer first, then its consumers
    index: int


@dataclass
class Result:
    chosen: Trial  # the set that passed, or the best one tried
    tried: list[Trial] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.chosen.passed


def op_name(graph: Graph, number: int) -> str:
    """An op is named by its (first) output tensor, as the converter's denylist names it."""
    return graph.name(graph.ops[number]["outputs"][0])


def rank(graph: Graph, rows: list[dict]) -> list[Unit]:
    """Tensors the fully quantized model holds in integers, most costly first (ties: graph
    order). Ops the quantizer left in float are not ranked: keeping them in float changes nothing."""
    error = {row["tensor"]: min(row["error"], 1.0) for row in rows}  # past 100% it is noise, not cost
    consumers = graph.consumers()
    units = []
    for row in rows:
        if row["dtype"] not in INTEGER_DTYPES:  # already float in the quantized model: nothing to gain
            continue
        op = graph.ops[row["index"]]
        read = [error.get(graph.name(t), 0.0) for t in op["inputs"]]
        added = min(row["error"], 1.0) - max(read, default=0.0)
        readers = [op_name(graph, n) for n in consumers.get(op["outputs"][0], []) if graph.ops[n]["outputs"]]
        group = tuple(dict.fromkeys([row["tensor"], *readers]))
        units.append(Unit(row["tensor"], row["op"], round(max(row["local_error"], added, 0.0), 5), group,
                          row["index"]))
    return sorted(units, key=lambda u: (-u.score, u.index))


def chain(units: list[Unit], start: tuple[str, ...], limit: int) -> list[tuple[str, ...]]:
    """S0 = start, then each next group added in rank order while the set stays within `limit`."""
    sets, current = [tuple(start)], list(start)
    for unit in units:
        added = [op for op in unit.ops if op not in current]
        if added and len(current) + len(added) <= limit:
            current += added
            sets.append(tuple(current))
    return sets


def _quality(trial: Trial) -> tuple:
    """Sort key of 'best result': fewest failed thresholds, then the best headline figure."""
    metrics = trial.metrics or {}
    figure = 0.0
    if metrics.get("accuracy"):
        figure = metrics["accuracy"]["tflite"]
    else:
        first = next(iter((metrics.get("outputs") or {}).values()), {})
        figure = first.get("top1_agreement", first.get("cosine", 0.0))
    return (len(trial.failures), -figure, len(trial.layers))


def search(evaluate: Callable[[tuple[str, ...]], Trial], units: list[Unit], limit: int,
           start: tuple[str, ...] = (), first: Trial | None = None) -> Result:
    """The fewest layers in float that pass (see the module docstring), or the best tried
    (`first`: the start set, already evaluated)."""
    tried: dict[frozenset, Trial] = {frozenset(first.layers): first} if first is not None else {}

    def trial(layers: tuple[str, ...]) -> Trial:
        key = frozenset(layers)
        if key not in tried:
            tried[key] = evaluate(layers)
        return tried[key]

    sets = chain(units, start, limit)
    if not trial(sets[0]).passed:
        if not trial(sets[-1]).passed:
            return Result(min(tried.values(), key=_quality), list(tried.values()))
        low, high = 0, len(sets) - 1
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if trial(sets[middle]).passed else (middle, high)
        chosen = sets[high]
    else:
        chosen = sets[0]
    for layer in reversed(chosen):
        smaller = tuple(name for name in chosen if name != layer)
        if trial(smaller).passed:
            chosen = smaller
    return Result(trial(chosen), list(tried.values()))


# ---------------------------------------------------------------- one target

@dataclass
class Context:
    """Where a target comes from: its conversion key (the search key), and the set its last
    passing build chose."""
    file: str
    recipe_name: str
    recipe: object
    target_name: str
    key: str  # the parent's conversion key: a new key searches again, from the last set
    previous: dict | None = None  # the last passing build's set (`recorded`, read by the parent)

    @property
    def target(self):
        return self.recipe.targets[self.target_name]


def apply(calibrated, check: Callable[[bytes], tuple[dict, list[str]]], inputs: dict, batch: int,
          context: Context) -> tuple[bytes, dict, list[str]]:
    """The model to verify, the report's `float_fallback` (and `layer_errors` where they were
    measured), and failures to add.

    `calibrated` is convert.Calibrated (its float model, and `quantize(ops, op_types)`); `check`
    measures a candidate against every threshold but latency. Per-layer figures cost a LiteRT run
    of both models with every tensor kept, up to most of a conversion on long activations, so
    they are measured here only when the search needs them (`auto`, when the fully quantized
    model misses a threshold); a target that fails gets them afterwards (`layer_rows`), and a
    passing one on request (`tfbuild explain`, tfbuild/analysis.py)."""
    from tfbuild.layer_error import graph

    target = context.target
    float_graph = graph(calibrated.model)
    measured: list[list[dict]] = []

    def layers() -> list[dict]:
        if not measured:
            measured.append(_measure(calibrated, inputs, batch, context))
        return measured[0]

    failures: list[str] = []
    if target.float_fallback == "none":
        model, info = calibrated.quantize(), {"mode": "none", "layers": []}
    elif isinstance(target.float_fallback, list):
        nodes, kinds = resolve(target.float_fallback, float_graph, context.file,
                               f"targets.{context.target_name}.float_fallback")
        model = calibrated.quantize(nodes, kinds)
        info = {"mode": "list", "layers": list(dict.fromkeys(nodes + ops_of_types(float_graph, kinds)))}
    else:
        model, info, failures = _auto(calibrated, check, float_graph, layers, context)
    extra: dict = {"float_fallback": info}
    if measured:
        extra["layer_errors"] = annotate(measured[0], float_graph, info["layers"])
    return model, extra, failures


def _measure(calibrated, inputs: dict, batch: int, context: Context) -> list[dict]:
    from tfbuild.layer_error import layer_errors

    try:
        return layer_errors(calibrated.model, calibrated.quantize(), inputs, batch)
    except Exception as err:  # LiteRT cannot run a model's intermediates: auto cannot search
        raise ConversionFailed(f"float_fallback: auto cannot measure the layers of this model ({err}): "
                               f"set targets.{context.target_name}.float_fallback to none or to a "
                               "list of the layers to keep in float") from None


def annotate(rows: list[dict], float_graph: Graph, kept: list[str]) -> list[dict]:
    """Each row's `cost` (the search's ranking score; 0 for ops the quantizer left in float) and
    `kept_float` (the shipped file computes it in float)."""
    cost = {unit.tensor: unit.score for unit in rank(float_graph, rows)}
    kept_set = set(kept)
    for row in rows:
        row["cost"] = cost.get(row["tensor"], 0.0)
        row["kept_float"] = row["tensor"] in kept_set
    return rows


def layer_rows(float_bytes: bytes, full_bytes: bytes, inputs: dict, batch: int, kept: list[str]) -> list[dict]:
    """The per-layer figures of a fully quantized model, annotated; [] where LiteRT cannot run
    its intermediates (the figures are a diagnosis, never a reason to fail a target)."""
    from tfbuild.layer_error import graph, layer_errors

    try:
        rows = layer_errors(float_bytes, full_bytes, inputs, batch)
    except Exception:  # noqa: BLE001 - as above: LiteRT refusing is not a bug of ours
        return []
    return annotate(rows, graph(float_bytes), kept)


def _auto(calibrated, check, float_graph: Graph, layers: Callable[[], list[dict]], context: Context):
    started = time.perf_counter()
    limit = context.target.max_float_layers
    key = context.key
    previous = context.previous
    known = {op_name(float_graph, n) for n, op in enumerate(float_graph.ops) if op["outputs"]}
    info: dict = {"mode": "auto", "search_key": key, "max_float_layers": limit}
    if previous and previous["search_key"] == key and set(previous["layers"]) <= known:
        info.update(layers=list(previous["layers"]), search="reused", trials=0, tried=[],
                    search_s=round(time.perf_counter() - started, 3))
        return calibrated.quantize(previous["layers"]), info, []
    start = tuple(name for name in (previous or {}).get("layers", []) if name in known)
    start = start if len(start) <= limit else ()

    def evaluate(layers: tuple[str, ...]) -> Trial:
        model = calibrated.quantize(layers)
        metrics, failures = check(model)
        return Trial(tuple(layers), model, metrics, failures)

    first = evaluate(start)
    if first.passed and not start:  # the fully quantized model passes: nothing to rank or search
        result, units = Result(first, [first]), []
    else:
        units = rank(float_graph, layers())
        result = search(evaluate, units, limit, start, first)
    how = "resumed" if previous else "searched"
    if result.passed and not result.chosen.layers and len(result.tried) == 1 and not start:
        how = "not needed"
    info.update(layers=list(result.chosen.layers), search=how, trials=len(result.tried),
                tried=[list(t.layers) for t in result.tried], scored=[scored(t) for t in result.tried],
                ranking=ranking(units),
                search_s=round(time.perf_counter() - started, 3))
    failures = [] if result.passed else [
        f"float_fallback: auto: no set of at most {limit} float layer(s) passes ({len(result.tried)} "
        f"tried); the best tried keeps {len(result.chosen.layers)} in float and is kept for inspection "
        f"(tfbuild explain {context.recipe_name}:{context.target_name} lists the sets)"]
    return result.chosen.model, info, failures


def scored(trial: Trial) -> dict:
    """What `explain` shows of a tried set: its layers, whether it passed, its headline figures
    and the thresholds it missed."""
    from tfbuild.report import headline_metrics

    return {"layers": list(trial.layers), "passed": trial.passed,
            "metrics": headline_metrics({"metrics": trial.metrics}), "failures": list(trial.failures)}


def describe(info: dict, rows: list[dict]) -> str | None:
    """One line for the build output when a shipped model keeps layers in float."""
    from tfbuild.report import layer_labels

    if not info.get("layers"):
        return None
    search = f" (search: {info['search']}, {info['trials']} trial(s))" if info.get("search") else ""
    return (f"float_fallback: {len(info['layers'])} layer(s) kept in float, which int8-only "
            f"accelerators run on the CPU{search}: {', '.join(layer_labels(info['layers'], rows))}")


# ---------------------------------------------------------------- a list in the recipe

def _components(tensor: str) -> set[str]:
    return {part for name in tensor.split(";") for part in name.split("/")}


def resolve(names: list[str], graph: Graph, file: str, key: str) -> tuple[list[str], list[str]]:
    """(ops by output tensor name, op types) for the recipe's list: an op type (CONV_2D), an
    output tensor name, or a Keras layer name (a path component of the tensor names; the
    `_1` suffix TensorFlow adds when tracing is accepted when nothing matches exactly)."""
    types = {op["type"] for op in graph.ops}
    ops = [op_name(graph, n) for n, op in enumerate(graph.ops) if op["outputs"]]
    nodes, kinds = [], []
    for name in names:
        if name.upper() in types:
            kinds.append(name.upper())
            continue
        found = [op for op in ops if op == name] or [op for op in ops if name in _components(op)] or \
                [op for op in ops if any(re.fullmatch(rf"{re.escape(name)}_\d+", c) for c in _components(op))]
        if not found:
            layers = sorted({c for op in ops for c in op.split(";")[0].split("/")[1:-1]})
            raise UserError(f"float_fallback: the model has no layer, tensor or op type {name!r}", file=file,
                            key=key, expected=f"one of the op types {', '.join(sorted(types))}, or a layer: "
                                              f"{', '.join(layers[:12]) or '(none)'}")
        nodes += [op for op in found if op not in nodes]
    return nodes, kinds


def ops_of_types(graph: Graph, kinds: list[str]) -> list[str]:
    return [op_name(graph, n) for n, op in enumerate(graph.ops) if op["type"] in kinds and op["outputs"]]


# ---------------------------------------------------------------- what was chosen before

def _valid(record) -> dict | None:
    if isinstance(record, dict) and isinstance(record.get("search_key"), str) and \
            isinstance(record.get("layers"), list) and all(isinstance(x, str) for x in record["layers"]):
        return record
    return None


def recorded(state_entry: dict | None, lock_entry: dict | None) -> dict | None:
    """The set chosen by the last passing build of a target: the build state's, else the
    committed lock's (a fresh clone reuses the set its lock records). None if there is none;
    an entry of the wrong shape is never trusted."""
    state = state_entry or {}
    last_good = state.get("last_good") if isinstance(state.get("last_good"), dict) else {}
    return _valid(state.get("float_fallback")) or _valid(last_good.get("float_fallback")) or \
        _valid((lock_entry or {}).get("float_fallback"))


def lock_record(report: dict | None) -> dict | None:
    """What the state and the lock keep of a passing auto search: the set and its search key."""
    chosen = (report or {}).get("float_fallback") or {}
    if chosen.get("mode") == "auto" and chosen.get("passed") and chosen.get("search_key"):
        return {"layers": list(chosen["layers"]), "search_key": chosen["search_key"]}
    return None


def ranking(units: list[Unit]) -> list[dict]:
    return [{"tensor": u.tensor, "op": u.op, "score": u.score, "keeps_float": list(u.ops)}
            for u in units[:RANKED_IN_REPORT]]
