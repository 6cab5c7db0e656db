"""Read Model Garden MaskConver checkpoints (training- and export-style) and the project's own checkpoints.

Project checkpoints are single ``.npz`` files: canonical weight names (see ``architecture``) plus the config as
JSON under ``__config__``. Model Garden checkpoints are TF object-based checkpoints; keys are matched by name
after removing the ``model/`` prefix (export style) and the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from maskconver.models.config import MaskConverConfig
from maskconver.runtime.atomic import write_bytes_atomic

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
CONFIG_KEY = "__config__"
FORMAT_KEY = "__maskconver_checkpoint__"
# Variables a Model Garden checkpoint may hold that the exported MaskConver graph does not use.
_SKIPPED_PREFIXES = ("backbone/layer_with_weights-18/", "optimizer/", "global_step", "save_counter")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested config (nothing is loaded)."""


def _tf_checkpoint_prefix(path: Path) -> str | None:
    """The TF checkpoint prefix for a directory (``checkpoint`` state file) or a prefix path, else None."""
    if path.is_dir():
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(str(path))
        return latest
    if Path(str(path) + ".index").exists():
        return str(path)
    if path.suffix == ".index" and path.exists():
        return str(path.with_suffix(""))
    return None


def read_checkpoint_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict | None, str]:
    """All arrays of a checkpoint under canonical names, the embedded config (project files) and the kind."""
    path = Path(path)
    if not path.exists() and not Path(str(path) + ".index").exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{path} is not a readable maskconver .npz checkpoint ({e})") from e
        if FORMAT_KEY not in arrays:
            raise CheckpointError(f"{path} is an .npz file but not a maskconver checkpoint (no {FORMAT_KEY})")
        cfg = json.loads(bytes(arrays.pop(CONFIG_KEY)).decode()) if CONFIG_KEY in arrays else None
        arrays.pop(FORMAT_KEY)
        extra = [k for k in arrays if k.startswith("__")]
        for k in extra:
            arrays.pop(k)
        return arrays, cfg, "maskconver"
    prefix = _tf_checkpoint_prefix(path)
    if prefix is None:
        raise CheckpointError(
            f"{path} is neither a maskconver .npz checkpoint nor a TensorFlow checkpoint "
            "(expected a directory with a 'checkpoint' file, a prefix like ckpt-1, or its .index file)"
        )
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # noqa: BLE001 - TF raises several unrelated types for corrupt files
        raise CheckpointError(f"cannot read TensorFlow checkpoint {prefix}: {e}") from e
    shapes = reader.get_variable_to_shape_map()
    out: dict[str, np.ndarray] = {}
    kind = "modelgarden-export"
    for key in shapes:
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH" or ".OPTIMIZER_SLOT" in key:
            continue
        name = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else key
        if name == "global_step":
            kind = "modelgarden-train"
        if name.startswith("model/"):
            name = name[len("model/") :]
        if name in out:
            continue  # the same variable reachable twice: identical values
        out[name] = reader.get_tensor(key)
    return out, None, kind


def match_weights(
    arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: str
) -> dict[str, np.ndarray]:
    """Check names and shapes against ``expected``; raise one error listing every problem."""
    problems = []
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(k for k in set(arrays) - set(expected) if not k.startswith(_SKIPPED_PREFIXES))
    bad_shape = sorted(
        k for k in set(expected) & set(arrays) if tuple(np.shape(arrays[k])) != tuple(expected[k])
    )
    if missing:
        problems.append(
            f"{len(missing)} missing: " + ", ".join(f"{k} {list(expected[k])}" for k in missing[:12])
        )
    if extra:
        problems.append(
            f"{len(extra)} unexpected: " + ", ".join(f"{k} {list(np.shape(arrays[k]))}" for k in extra[:12])
        )
    if bad_shape:
        problems.append(
            f"{len(bad_shape)} with the wrong shape: "
            + ", ".join(
                f"{k} is {list(np.shape(arrays[k]))}, expected {list(expected[k])}" for k in bad_shape[:12]
            )
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit this config: "
            + "; ".join(problems)
            + ". Pass the --config the checkpoint was trained with."
        )
    return {k: np.asarray(arrays[k], dtype=np.float32) for k in expected}


def read_mask_head(path: str | Path) -> dict[str, np.ndarray]:
    """The ``mask_head.npz`` arrays of a checkpoint (Model Garden or maskconver) without building the model."""
    from maskconver.models.architecture import mask_head_from_weights

    arrays, _, _ = read_checkpoint_arrays(path)
    try:
        return mask_head_from_weights(arrays)
    except KeyError as e:
        raise CheckpointError(f"checkpoint {path} has no mask head variable {e}") from e


def load_checkpoint(path: str | Path, config: MaskConverConfig | None = None, input_size=None):
    """Build the model for ``config`` and load ``path`` into it; all-or-nothing.

    ``config`` may be None for project checkpoints (their config is embedded). Returns the
    :class:`~maskconver.models.architecture.MaskConverModel`.
    """
    from maskconver.models.architecture import build_model
    from maskconver.models.config import MaskConverConfig as _Cfg

    arrays, embedded, _kind = read_checkpoint_arrays(path)
    if config is None:
        if embedded is None:
            raise CheckpointError(f"{path} is a Model Garden checkpoint: pass its config (--config)")
        config = _Cfg.from_dict(embedded)
    model = build_model(config, input_size=input_size)
    expected = {k: tuple(v.shape) for k, v in model.variables_by_name().items()}
    model.set_weights_dict(match_weights(arrays, expected, str(path)))
    return model


def save_checkpoint(model, path: str | Path, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write a project ``.npz`` checkpoint atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(model.get_weights_dict())
    arrays[CONFIG_KEY] = np.frombuffer(model.config.to_json().encode(), dtype=np.uint8)
    arrays[FORMAT_KEY] = np.array(1, dtype=np.int32)
    for k, v in (extra or {}).items():
        arrays[f"__{k}__"] = v
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue(), make_parents=True, fsync=True)
    return path


def checkpoint_hash(path: str | Path) -> str:
    """sha256 over the checkpoint's files (the .npz, or the TF prefix's index + data shards)."""
    path = Path(path)
    prefix = None if path.suffix == ".npz" else _tf_checkpoint_prefix(path)
    if prefix is not None:  # a TF checkpoint given as folder, prefix or .index: hash index + data shards
        files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".*"))
    else:
        files = [path]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
