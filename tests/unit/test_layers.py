"""The house rules of the layout (docs/layout.md), checked on the source: layers only import downward, no import
cycles, ragtune's own imports at the top of the file, and function-level imports only for heavy libraries."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Lower number = lower layer. A module may import its own package and any lower layer, never a higher one or a
# sibling of the same layer (kb and lm know nothing of each other; neither do answer and versioning).
LAYERS = {
    "tasks.core": 0,
    "tasks.kb": 1,
    "tasks.lm": 1,
    "tasks.train": 2,
    "tasks.pipeline": 3,
    "tasks.answer": 4,
    "tasks.versioning": 4,
    "flows": 5,
}

# Imported inside the functions that need them, so `ragtune --help`, `search` and `stage ingest` never pay for them.
HEAVY = {
    "torch": "1-2 s and hundreds of MB; only training, generation and embedding need it",
    "transformers": "seconds; only model loading, tokenizers of LMs and training",
    "peft": "imports transformers",
    "sentence_transformers": "imports torch; only embedding and reranking",
    "safetensors": "its torch backend imports torch; only adapter verification",
    "huggingface_hub": "network client; only the reachability check of a hub id",
    "qdrant_client": "~0.5 s with grpc; only the stages and commands that touch the store",
    "great_expectations": "several seconds; only the two data gates",
    "matplotlib": "only the loss plot after training",
    "pandas": "0.35 s; only the gates build data frames",
    "pypdf": "0.3 s; only PDF sources",
    "trafilatura": "0.3 s with lxml; only HTML sources",
    "datasketch": "0.7 s (scipy, its async LSH); only the clean stage's near-duplicate check",
    "ftfy": "0.15 s; only cleaning documents and training examples",
    "httpx": "0.12 s; only web sources (and Prefect's client)",
    "py3langid": "0.9 s to load its model; only `ragtune profile`'s language mix",
    "prefect": "~2 s; only commands that run a flow, and the UI progress artifacts",
    "deepspeed": "seconds and a CUDA probe; only when train.deepspeed is set",
    "prefect_dask": "0.9 s (dask, distributed); only embed.workers > 1 or embed.dask_address",
    "openvino": "0.3 s; only embed.backend=openvino-int8",
    "nncf": "seconds (scipy, sklearn); only building an int8 encoder, once per model",
}
# The CLI imports a flow module (which imports Prefect at its top) only in the command that runs it.
LAZY_FLOWS = {
    "flows.kb_refresh",
    "flows.retrain",
    "flows.compare",
    "flows.data_profile",
    "flows.watch",
    "flows.deployments",
}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted([*REPO.glob("tasks/**/*.py"), *REPO.glob("flows/**/*.py")]):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def own(module: str) -> bool:
    return module.split(".")[0] in ("tasks", "flows")


def layer_of(module: str) -> tuple[str, int]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and to docs/layout.md")


def imports(tree: ast.Module, top_level: bool) -> list[tuple[str, int]]:
    """(module, line) of absolute imports at module level (top_level) or inside functions (not top_level)."""
    nodes = (
        tree.body
        if top_level
        else [n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)]
    )
    found = []
    for node in nodes:
        if isinstance(node, ast.If) and top_level:  # `if TYPE_CHECKING:` blocks are for the type checker only
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from tasks.kb import stages` imports the module tasks.kb.stages
            subs = [
                f"{node.module}.{a.name}"
                for a in node.names
                if (REPO / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").is_file()
            ]
            found += [(s, node.lineno) for s in subs] or [(node.module, node.lineno)]
    return found


def test_every_layer_imports_only_downward():
    wrong = []
    for name, tree in modules().items():
        if name == "tasks":
            continue  # the empty namespace package
        package, level = layer_of(name)
        for target, line in imports(tree, top_level=True):
            if not own(target):
                continue
            other, other_level = layer_of(target)
            if other != package and other_level >= level:
                wrong.append(f"{name}:{line} imports {target} ({other}, layer {other_level} >= {level})")
    assert not wrong, "imports against the layering (docs/layout.md):\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: {t for t, _ in imports(tree, top_level=True) if own(t)} for name, tree in modules().items()}
    graph = {
        n: ({t if t in graph else t.rsplit(".", 1)[0] for t in deps} & graph.keys()) - {n} for n, deps in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_own_imports_are_at_the_top_and_function_level_imports_are_heavy_libraries():
    wrong = []
    for name, tree in modules().items():
        for target, line in imports(tree, top_level=False):
            root = target.split(".")[0]
            if own(target):
                if not (name.startswith("flows.cli") and target in LAZY_FLOWS):
                    wrong.append(f"{name}:{line} imports {target} inside a function: move it to the top")
            elif root not in HEAVY:
                wrong.append(
                    f"{name}:{line} imports {target} inside a function: move it to the top, or add it to "
                    "HEAVY with the reason"
                )
    assert not wrong, "\n".join(wrong)


def test_stage_logic_imports_neither_prefect_nor_dvc():
    wrong = [
        f"{name}:{line} imports {t}"
        for name, tree in modules().items()
        if name.startswith("tasks")
        for top in (True, False)
        for t, line in imports(tree, top)
        if t.split(".")[0] in ("prefect", "dvc")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_shadows_the_standard_library():
    """Prefect runs a deployment's flow with its folder (flows/) on sys.path: flows/profile.py once replaced the
    stdlib `profile` that cProfile imports, and every served retrain failed. (tasks/ is only imported as a package.)"""
    clash = sorted(
        path.relative_to(REPO).as_posix() for path in REPO.glob("flows/*.py") if path.stem in sys.stdlib_module_names
    )
    assert not clash, f"rename these modules, they shadow the standard library: {clash}"
