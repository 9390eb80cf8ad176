"""The ``medvl`` command: LightningCLI subcommands plus medvl's own tools.

``medvl fit|validate|test|predict`` are LightningCLI with ``--model``/``--data`` taking
YAML from the top-level ``models/`` and ``datamodules/`` folders (or ``--config`` with a
recipe from ``experiments/``). ``medvl synth`` writes the synthetic DICOM dataset, ``medvl prepare`` builds a
preprocessed cache (or de-identified copies),
``medvl export`` writes a checkpoint's encoder, ``medvl demo`` runs a recipe end to end.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("medvl")

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

_OVERVIEW = """\
usage: medvl <command> [options]

Lightning commands (LightningCLI; `medvl <command> --help` for all options):
  fit        train a model:  medvl fit --config experiments/quickstart.yaml
  validate   run the validation loop on a checkpoint
  test       run the test loop and print the metrics tables
  predict    run inference and return the predictions

medvl commands:
  synth      write the synthetic phantom DICOM dataset (reports, labels, VQA, splits)
  prepare    build a memory-mapped preprocessed cache, or de-identified DICOM copies
  export     write a checkpoint's image encoder (safetensors, timm, TorchScript, ONNX)
  eval       score files: medvl eval reports --pred FILE --ref FILE [--out DIR]
  demo       synthesise if needed, fit, test and export one recipe end to end
"""


# What the data is travels to the model: each data-module attribute fills the model
# argument of the same name, so a model and a data module cannot disagree.
DATA_LINKS = ("label_names", "img_size", "in_chans", "window", "image_mean", "image_std")

RECIPE_BASE = "base"
"""Key of a recipe that names the groups it starts from: ``{model, data, trainer}: <yaml path>``."""


def expand_recipes(args: list[str]) -> list[str]:
    """Turns ``--config RECIPE`` into ``--trainer T --model M --data D --config <RECIPE's deltas>``.

    A recipe in ``experiments/`` holds deltas only: its ``base:`` entry names the YAML of
    the ``models/``, ``datamodules/`` and ``trainer/`` groups it starts from (paths relative
    to the recipe), and the rest of the file overrides them.
    """
    import yaml

    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        path = None
        if arg == "--config" and i + 1 < len(args):
            path, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            path, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        recipe = Path(path)
        body = yaml.safe_load(recipe.read_text(encoding="utf-8")) if recipe.is_file() else None
        if not isinstance(body, dict) or RECIPE_BASE not in body:
            out += ["--config", path]
            continue
        base = body.pop(RECIPE_BASE) or {}
        unknown = sorted(set(base) - {"model", "data", "trainer"})
        if unknown:
            raise SystemExit(f"{recipe}: '{RECIPE_BASE}' names unknown group(s) {unknown}; use model, data, trainer")
        for group in ("trainer", "model", "data"):
            if group in base:
                group_file = (recipe.parent / base[group]).resolve()
                if not group_file.is_file():
                    raise SystemExit(f"{recipe}: {RECIPE_BASE}.{group}: {base[group]} not found ({group_file})")
                out += [f"--{group}", str(group_file)]
        out += ["--config", yaml.safe_dump(body, sort_keys=False)]
    return out


RESUME = "medvl.models._checkpoint"
"""Where the resume machinery lives: the logger, the checkpoint record callback and the atomic checkpoint IO."""


def _run_dirs(cli, subcommand: str | None) -> None:
    """Outputs follow ``trainer.default_root_dir``: CSV logs in ``<root>/logs``, checkpoints in ``<root>/checkpoints``.

    Also installs what an exact resume needs (:mod:`medvl.models._checkpoint`): the CSV
    logger that can continue a run, the callback that records medvl's version, the log
    and the random generators in every checkpoint, and atomic checkpoint writes (unless
    the configuration names a checkpoint IO plugin of its own).
    """
    from jsonargparse import Namespace

    config = cli.config[subcommand] if subcommand else cli.config
    trainer = config["trainer"]
    root = trainer.get("default_root_dir") or "."
    if trainer.get("logger") in (None, True):
        trainer["logger"] = Namespace(class_path=f"{RESUME}.ResumableCSVLogger",
                                      init_args=Namespace(save_dir=root, name="logs"))
    callbacks = trainer.get("callbacks")
    callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
    for callback in callbacks:
        init = callback.get("init_args") if isinstance(callback, Namespace) else None
        if callback.get("class_path", "").endswith("ModelCheckpoint") and init is not None and not init.get("dirpath"):
            init["dirpath"] = str(Path(root) / "checkpoints")
    if not any(isinstance(c, Namespace) and c.get("class_path") == f"{RESUME}.ResumeRecord" for c in callbacks):
        callbacks.append(Namespace(class_path=f"{RESUME}.ResumeRecord", init_args=Namespace()))
    trainer["callbacks"] = callbacks
    plugins = trainer.get("plugins")
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
    from lightning.pytorch.plugins.io import CheckpointIO

    def is_io(plugin: object) -> bool:
        cls = _resolve_class(plugin.get("class_path")) if isinstance(plugin, Namespace) else type(plugin)
        return isinstance(cls, type) and issubclass(cls, CheckpointIO)

    if not any(is_io(p) for p in plugins):
        plugins.append(Namespace(class_path=f"{RESUME}.AtomicCheckpointIO", init_args=Namespace()))
    trainer["plugins"] = plugins


def _last_checkpoint(trainer) -> Path | None:
    """The file ``--ckpt_path last`` names: as Lightning, the newest ``*last*.ckpt`` of the ModelCheckpoint folders."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    found = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and Path(callback.dirpath).is_dir():
            found += [p for p in Path(callback.dirpath).iterdir() if p.is_file() and p.suffix == callback.FILE_EXTENSION
                      and callback.CHECKPOINT_NAME_LAST in p.name]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _resume(cli) -> None:
    """``medvl fit --ckpt_path last|FILE``: resolve ``last``, refuse what cannot load, log on into the killed run.

    ``last`` becomes the newest ``last*.ckpt`` in the ModelCheckpoint folders (nothing
    found: Lightning warns and training starts afresh). The checkpoint's record says
    which log version it belongs to; when that is a version of this run's logger, the
    resumed run appends to its ``metrics.csv``, from the checkpoint's step on.
    """
    from medvl.models._checkpoint import continue_logging, read_record

    config = cli.config_init["fit"]
    ckpt = config.get("ckpt_path")
    if not ckpt:
        return
    if ckpt == "last":
        found = _last_checkpoint(cli.trainer)
        if found is None:
            return
        config["ckpt_path"] = ckpt = str(found)
        log.warning("--ckpt_path last -> %s", found)
        _check_checkpoint_task(found, f"{type(cli.model).__module__}.{type(cli.model).__qualname__}")
    if not Path(str(ckpt)).is_file():
        return
    if continue_logging(cli.trainer, read_record(ckpt)):
        log.warning("resuming %s: logging on into %s", ckpt, cli.trainer.logger.log_dir)


def _linked_model_args(cli, subcommand: str | None) -> dict[str, object]:
    """Takes the data-linked model arguments out of the parsed config; a hand-set one is refused.

    A value given on the command line or in a model YAML would be overwritten by the link,
    so it is an error. With ``--ckpt_path``, LightningCLI has merged the checkpoint's
    hyper-parameters into the config: those values are returned (and removed) so that
    :func:`_check_checkpoint_data` can compare them with the data module's.
    """
    config = cli.config[subcommand] if subcommand else cli.config
    model = config.get("model") or {}
    from_ckpt: dict[str, object] = {}
    ckpt = config.get("ckpt_path") if subcommand else None
    for group in ("init_args", "dict_kwargs"):
        init = model.get(group) or {}
        given = [name for name in DATA_LINKS if init.get(name) is not None]
        if given and not ckpt:
            raise SystemExit(
                f"medvl: model argument(s) {given} come from the data module; set them there instead "
                f"({', '.join(f'--data.{n}' for n in given)}), so the model and the data cannot disagree"
            )
        for name in given:
            from_ckpt[name] = init[name]
            if group == "dict_kwargs":
                del init[name]
    return from_ckpt


def _check_checkpoint_data(saved: dict[str, object], datamodule, ckpt: str) -> None:
    """The checkpoint's data settings must be the data module's (else its numbers would mean nothing)."""
    def same(a: object, b: object) -> bool:
        listify = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        return listify(a) == listify(b)

    wrong = {k: (v, getattr(datamodule, k)) for k, v in saved.items()
             if hasattr(datamodule, k) and not same(v, getattr(datamodule, k))}
    if wrong:
        lines = "; ".join(f"{k}: checkpoint {c!r}, data {d!r}" for k, (c, d) in wrong.items())
        raise SystemExit(f"medvl: {ckpt} was trained on other data settings ({lines}); "
                         "configure the data module like the checkpoint's run")


def _best_checkpoint(cli, subcommand: str) -> None:
    """``--ckpt_path best`` in a fresh process: the newest ``best*.ckpt`` of the recipe's run folder.

    Lightning knows the best checkpoint only in the process that ran ``fit``; medvl's
    checkpoints are ``<default_root_dir>/checkpoints/<filename>.ckpt``, so ``medvl test
    --config R --ckpt_path best`` finds the file there (the newest ``-vN`` version when a
    rerun wrote several).
    """
    config = cli.config_init[subcommand]
    callback = cli.trainer.checkpoint_callback
    if config.get("ckpt_path") != "best" or callback is None or callback.best_model_path or not callback.dirpath:
        return
    stem, folder = callback.filename or "best", Path(callback.dirpath)
    found = sorted([*folder.glob(f"{stem}.ckpt"), *folder.glob(f"{stem}-v*.ckpt")], key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"--ckpt_path best: no {stem}.ckpt in {folder}; train first or give a checkpoint path")
    config["ckpt_path"] = str(found[-1])
    log.warning("--ckpt_path best -> %s", found[-1])
    _check_checkpoint_task(found[-1], f"{type(cli.model).__module__}.{type(cli.model).__qualname__}")


def _resolve_class(path: object) -> object:
    """The class a ``class_path`` names (the path itself when it does not import)."""
    import importlib

    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return str(path)


def _check_checkpoint_task(ckpt: object, configured: object) -> None:
    """Refuse a checkpoint of another task than the configured one, or of another format, naming both.

    LightningCLI would otherwise swap the configured model class for the checkpoint's
    (``_class_path`` in its hyper-parameters) and run, say, a contrastive test under a
    report-generation recipe, exiting 0 with numbers of the wrong evaluation.
    """
    if not ckpt or not configured or not Path(str(ckpt)).is_file():
        return
    import torch

    from medvl.models._checkpoint import CheckpointMismatchError, check_checkpoint

    try:
        checkpoint = torch.load(str(ckpt), map_location="cpu", weights_only=True, mmap=True)
        hparams = checkpoint.get("hyper_parameters")
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise SystemExit(f"medvl: cannot read checkpoint {ckpt}: {type(err).__name__}: {err}") from None
    try:
        check_checkpoint(checkpoint, ckpt)  # its format; the task is compared just below
    except CheckpointMismatchError as err:
        raise SystemExit(f"medvl: {err}") from None
    saved = (hparams or {}).get("_class_path")
    if saved and _resolve_class(saved) is not _resolve_class(configured):
        raise SystemExit(
            f"medvl: {ckpt} is a {saved} checkpoint, but the configuration runs {configured}; give a checkpoint "
            f"of that task, or configure the checkpoint's task (--model {saved} with its recipe)")


def _given_model_args(config) -> dict[str, object]:
    """The model arguments set to something else than their default (by a YAML file or a flag).

    Lightning applies a ``--ckpt_path`` checkpoint's hyper-parameters over the whole model
    config; medvl then puts these back, so what the user sets wins (e.g. an evaluation
    option such as the decoding) and the checkpoint fills in the rest. Data-linked
    arguments are left to :func:`_linked_model_args`.
    """
    import importlib
    import inspect

    model = config.get("model")
    path = model.get("class_path") if model is not None else None
    init = model.get("init_args") if model is not None else None
    if not path or init is None:
        return {}
    module, _, name = str(path).rpartition(".")
    try:
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}
    given = {}
    for key, value in dict(vars(init)).items():
        p = params.get(key)
        if p is not None and key not in DATA_LINKS and p.default is not inspect.Parameter.empty and value != p.default:
            given[key] = value
    return given


def _params(cls) -> set[str]:
    """``__init__`` parameter names of ``cls`` and, where it forwards ``**kwargs``, of its bases."""
    import inspect

    names: set[str] = set()
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return names


def _unknown_config_keys(args: list[str]) -> list[str]:
    """Lines naming each key of the YAML files in ``args`` that its class does not take, and the nearest one.

    Called after the parser refused the configuration, to say where the offending key was
    written (the parser names it only in the merged configuration).
    """
    import difflib

    import yaml

    def load(path: Path) -> dict:
        try:
            body = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return {}
        return body if isinstance(body, dict) else {}

    files: list[tuple[Path, str | None]] = []  # (file, group it configures; None: a whole config)
    classes: dict[str, object] = {}
    i = 0
    while i < len(args):
        arg, value = args[i], args[i + 1] if i + 1 < len(args) else ""
        i += 1
        group = arg[2:] if arg in ("--config", "--model", "--data", "--trainer") else None
        if group is None or not value.endswith((".yaml", ".yml")) or not Path(value).is_file():
            continue
        i += 1
        path = Path(value)
        body = load(path)
        if group == "config":
            files.append((path, None))
            for g, rel in (body.get(RECIPE_BASE) or {}).items():
                if isinstance(rel, str) and (path.parent / rel).is_file():
                    files.insert(len(files) - 1, ((path.parent / rel).resolve(), g))
        else:
            files.append((path, group))
    out = []
    for path, group in files:
        body = load(path)
        sections = {group: body} if group else {g: body.get(g) for g in ("trainer", "model", "data")}
        for g, section in sections.items():
            if not isinstance(section, dict):
                continue
            if g == "trainer":
                import lightning as L

                given, valid, prefix = section, _params(L.Trainer), "trainer"
            else:
                if section.get("class_path"):
                    classes[g] = _resolve_class(section["class_path"])
                cls = classes.get(g)
                if not isinstance(cls, type):
                    continue
                given, valid, prefix = section.get("init_args") or {}, _params(cls), f"{g}.init_args"
            for key in given:
                if key not in valid:
                    near = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
                    hint = f"; nearest valid key: {prefix}.{near[0]}" if near else ""
                    out.append(f"medvl: {path}: unknown key {prefix}.{key}{hint}")
    return out


def _lightning_cli(args: list[str] | None, run: bool = True):
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    import medvl.datamodules  # noqa: F401  (registers the class paths for --data)
    import medvl.models  # noqa: F401

    given = list(sys.argv[1:] if args is None else args)  # as typed, recipes unexpanded
    expanded = expand_recipes(given)
    explicit_verbose = any(a.startswith("--verbose") for a in expanded)
    if args is None:  # the console script: LightningCLI reads sys.argv (it warns when given both)
        sys.argv[1:] = expanded

    class MedvlCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            for name in DATA_LINKS:
                parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

        def _parse_ckpt_path(self) -> None:
            sub = self.config.get("subcommand")
            if sub and self.config[sub].get("ckpt_path"):
                model = self.config[sub].get("model")
                _check_checkpoint_task(self.config[sub]["ckpt_path"], model.get("class_path") if model else None)
            given = _given_model_args(self.config[sub]) if sub and self.config[sub].get("ckpt_path") else {}
            super()._parse_ckpt_path()
            init = self.config[sub]["model"].get("init_args") if given else None
            for key, value in given.items():
                if init is not None and init.get(key) != value:
                    log.warning("--ckpt_path: model.%s = %r as configured (the checkpoint has %r)", key, value,
                                init.get(key))
                    init[key] = value

        def before_instantiate_classes(self) -> None:
            _run_dirs(self, self.subcommand)
            self._ckpt_data = _linked_model_args(self, self.subcommand)

        def after_instantiate_classes(self) -> None:
            super().after_instantiate_classes()
            if self._ckpt_data:
                _check_checkpoint_data(self._ckpt_data, self.datamodule, self.config[self.subcommand]["ckpt_path"])

        def _quiet(self, subcommand: str) -> None:
            # medvl prints its own metrics table; Lightning's would repeat it.
            if not explicit_verbose:
                self.config_init[subcommand]["verbose"] = False

        def before_fit(self) -> None:
            _resume(self)

        def before_validate(self) -> None:
            _best_checkpoint(self, "validate")
            self._quiet("validate")

        def before_test(self) -> None:
            _best_checkpoint(self, "test")
            self._quiet("test")

        def before_predict(self) -> None:
            _best_checkpoint(self, "predict")

    saved_argv = sys.argv
    if args is not None:  # from Python (tests, notebooks): the process's own argv is not ours
        sys.argv = saved_argv[:1]
    try:
        return MedvlCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=None if args is None else expanded,
            run=run,
            save_config_kwargs={"overwrite": True},
        )
    except SystemExit as exit_:
        if exit_.code == 2:  # the parser refused the configuration: say which file holds the bad key
            for line in _unknown_config_keys(given):
                print(line, file=sys.stderr)
        raise
    finally:
        sys.argv = saved_argv


def _synth(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="medvl synth", description="Write the synthetic phantom chest-radiograph dataset as DICOM.")
    p.add_argument("--out", default="data/synthetic_cxr", help="output folder (default: %(default)s)")
    p.add_argument("--n", type=int, default=2000, help="number of studies (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    a = p.parse_args(argv)
    from medvl.data.synth import generate_dataset

    t0 = time.perf_counter()
    manifest = generate_dataset(a.out, n=a.n, seed=a.seed, workers=a.workers)
    print(f"wrote {a.n} studies to {Path(a.out)} in {time.perf_counter() - t0:.1f} s; manifest: {manifest}")
    return 0


def _window(text: str | None) -> tuple[float, float] | str | None:
    """``lung`` (a preset name) or ``-600,1500`` (centre,width) or None."""
    if text is None:
        return None
    if "," in text:
        centre, width = (float(v) for v in text.split(","))
        return (centre, width)
    return text


def _prepare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="medvl prepare",
        description="Preprocess a manifest's images once into memory-mapped shards (resumable), "
        "or write de-identified DICOM copies with --deidentify.",
    )
    p.add_argument("manifest", help="JSONL manifest (image paths relative to its folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--img-size", type=int, default=224, help="square side (default: %(default)s)")
    p.add_argument("--in-chans", type=int, default=1, help="stored channels: 1 (colour folded to luma) or 3 (default: %(default)s)")
    p.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8", help="stored pixel type (default: %(default)s)")
    p.add_argument("--window", default=None, help="preset name (lung, mediastinum, bone, brain) or CENTRE,WIDTH; default: each file's own")
    p.add_argument("--shard-size", type=int, default=512, help="items per shard (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--deidentify", action="store_true", help="write de-identified DICOM copies (PS3.15 basic profile) instead of a cache")
    p.add_argument("--key", default=None, help="with --deidentify: key file for consistent pseudonyms/UIDs across runs (created if absent; keep it private)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.deidentify:
        from medvl.data.deid import Deidentifier, deidentify_dataset

        deid = Deidentifier.from_key_file(a.key) if a.key else Deidentifier()
        counts = deidentify_dataset(a.manifest, a.out, deid)
        print(
            f"wrote {counts['written']} de-identified studies to {a.out} in {time.perf_counter() - t0:.1f} s; "
            f"skipped {sum(counts['skipped'].values())} {counts['skipped'] or ''}"
        )
        if counts["burned_in_annotation"]:
            print(f"warning: {counts['burned_in_annotation']} file(s) declare burned-in annotation: check their pixels")
        return 0
    from medvl.data.cache import CacheSpec, build_cache
    from medvl.data.dataset import read_manifest

    spec = CacheSpec(img_size=a.img_size, dtype=a.dtype, window=_window(a.window), shard_size=a.shard_size,
                     in_chans=a.in_chans)
    summary = build_cache(read_manifest(a.manifest), Path(a.manifest).parent, a.out, spec, num_workers=a.workers)
    print(f"{summary} in {time.perf_counter() - t0:.1f} s")
    return 0


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="medvl export", description="Export a task checkpoint's image encoder.")
    p.add_argument("checkpoint", help="checkpoint of any medvl task, an export folder, or an encoder state dict")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--arch", default=None,
                   help="for a plain state-dict file: registry name, 'timm[:<timm name>]' or 'open_clip[:<model>]'")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads of a foreign state dict (head counts are not stored in weights)")
    p.add_argument("--formats", default="timm,torchscript,onnx",
                   help="comma-separated extra formats among timm, torchscript, onnx (default: %(default)s; "
                        "safetensors + config.json + README.md are always written)")
    p.add_argument("--window", default=None, help="DICOM window to record: a preset name or 'center,width'")
    a = p.parse_args(argv)
    from medvl.data.dicom import resolve_window
    from medvl.export import export_encoder

    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    kwargs = {"num_heads": a.num_heads} if a.num_heads else None
    try:  # a preset is recorded as its numbers, so the export needs no table to be read
        window = resolve_window(_window(a.window))
    except ValueError as err:
        p.error(f"--window: {err}")
    out = export_encoder(a.checkpoint, a.out, arch=a.arch, encoder_kwargs=kwargs, formats=formats, window=window)
    print(f"encoder exported to {out}/: {', '.join(sorted(p.name for p in Path(out).iterdir()))}")
    return 0


def _demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="medvl demo", description="Fit, test and export one recipe end to end.")
    p.add_argument("--config", default="experiments/quickstart.yaml", help="recipe (default: %(default)s)")
    p.add_argument("--export", default=None, help="export folder (default: exports/<recipe name>)")
    a, rest = p.parse_known_args(argv)
    from medvl.export import export_encoder

    t0 = time.perf_counter()
    cli = _lightning_cli(["--config", a.config, *rest], run=False)
    cli.datamodule.prepare_data()
    t_fit = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    t_fit = time.perf_counter() - t_fit
    ckpt = cli.trainer.checkpoint_callback.best_model_path or cli.trainer.checkpoint_callback.last_model_path
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt or None, verbose=False)
    metrics = results[0] if results else {}
    out = Path(a.export or Path("exports") / Path(a.config).stem)
    export_encoder(ckpt, out, extra={"test_metrics": metrics, "source_config": a.config})
    print(f"checkpoint: {ckpt}")
    print(f"encoder exported to {out}/: {', '.join(sorted(p.name for p in out.iterdir()))}")
    print(f"training took {t_fit:.0f} s; the whole demo {time.perf_counter() - t0:.0f} s")
    if "test/auroc_mean" in metrics:
        print(f"mean zero-shot AUROC (test split): {metrics['test/auroc_mean']:.4f}")
    return 0


def _eval_reports(argv: list[str]) -> int:
    """``medvl eval reports``: parse ``argv``, evaluate, print the Markdown table.

    Returns:
        0 on success, 1 when an input file is unusable (the reason goes to stderr).
    """
    parser = argparse.ArgumentParser(prog="medvl eval reports",
                                     description="BLEU/METEOR/ROUGE-L/CIDEr and CheXpert clinical efficacy "
                                                 "of generated reports, with bootstrap confidence intervals.")
    parser.add_argument("--pred", required=True, help="generated reports: JSONL or CSV with study_id, report")
    parser.add_argument("--ref", required=True, help="reference reports, same format")
    parser.add_argument("--out", default=None, help="folder for metrics.json and metrics.md")
    parser.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--pred-field", default="report", help="text field of --pred (default: %(default)s)")
    parser.add_argument("--ref-field", default="report", help="text field of --ref (default: %(default)s)")
    parser.add_argument("--observations", default=None,
                        help="comma-separated CheXpert observations for the CE averages (default: all 14)")
    args = parser.parse_args(argv)
    observations = [o.strip() for o in args.observations.split(",") if o.strip()] if args.observations else None
    from medvl.metrics.report_eval import evaluate_report_files, format_markdown

    try:
        result = evaluate_report_files(args.pred, args.ref, args.out, args.n_resamples, alpha=args.alpha,
                                       seed=args.seed, pred_field=args.pred_field, ref_field=args.ref_field,
                                       observations=observations)
    except ValueError as err:
        print(f"medvl eval reports: error: {err}", file=sys.stderr)
        return 1
    print(format_markdown(result), end="")
    return 0


def _eval(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: medvl eval reports --pred FILE --ref FILE [--out DIR] [--pred-field F] [--ref-field F]\n"
              "                          [--observations A,B,...] [--n-resamples N]\n\n"
              "  reports    NLG (BLEU, METEOR, ROUGE-L, CIDEr-D) and clinical efficacy with bootstrap 95% CIs\n"
              "             (`medvl eval reports --help` for every option)")
        return 0
    if argv[0] == "reports":
        return _eval_reports(argv[1:])
    print(f"medvl eval: unknown target {argv[0]!r} (expected: reports)", file=sys.stderr)
    return 2


COMMANDS = {"synth": _synth, "prepare": _prepare, "export": _export, "eval": _eval, "demo": _demo}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks replace it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _console_logging() -> None:
    """medvl's library logs (counts of found/dropped/skipped items, cache builds) on stderr as ``[medvl] ...``."""
    logger = logging.getLogger("medvl")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[medvl] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _console_logging()
    if not argv or argv[0] in ("-h", "--help"):
        print(_OVERVIEW)
        return 0
    if argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv[0] in LIGHTNING_COMMANDS:
        # From the console script, let LightningCLI read sys.argv itself (it warns when given
        # both); from Python (tests, notebooks) pass the list.
        _lightning_cli(None if argv == sys.argv[1:] else argv)
        return 0
    print(f"medvl: unknown command {argv[0]!r}\n\n{_OVERVIEW}", file=sys.stderr)
    return 2


EXPECTED_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
"""What a user's input causes and can fix: medvl's own errors (``ManifestError``,
``DicomReadError``, ``CacheMismatchError`` are ValueErrors) and missing or unreadable files."""


def _expected(err: BaseException) -> bool:
    from medvl.models._health import NonFiniteLossError

    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover - lightning is a dependency
        MisconfigurationException = ()  # type: ignore[assignment]  # noqa: N806
    return isinstance(err, (*EXPECTED_ERRORS, NonFiniteLossError, MisconfigurationException))


def console(argv: list[str] | None = None) -> int:
    """The ``medvl`` console script: :func:`main`, with expected errors as one or two lines.

    An expected error (:data:`EXPECTED_ERRORS`, a diverged run, a Lightning
    misconfiguration) prints ``medvl: <type>: <message>`` and exits 1; ``--debug``
    (anywhere in the arguments) or ``MEDVL_DEBUG=1`` shows the traceback instead.
    Anything else is a bug and keeps its traceback.
    """
    try:
        return _console(argv)
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Tear down the ``torch.distributed`` group a DDP run leaves open (torchrun, SLURM, Lightning's launcher).

    Otherwise gloo's threads are still running when the interpreter exits, and a finished
    rank can abort there ("terminate called without an active exception", SIGABRT), so the
    launcher reports a successful run as failed.
    """
    if "torch" not in sys.modules:  # nothing ran that could have started one
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _console(argv: list[str] | None) -> int:
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MEDVL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        sys.argv[1:] = argv
        return main(argv)
    sys.argv[1:] = argv
    try:
        return main(argv)
    except Exception as err:  # noqa: BLE001 - sorted into expected and not just below
        # jsonargparse wraps an error raised while instantiating a class in its own
        # ValueError ("Does not validate against any of the Union subtypes"): report the cause.
        chain, e = [], err
        while e is not None and e not in chain:
            chain.append(e)
            e = e.__cause__ or e.__context__
        if not _expected(chain[-1]) and not all(_expected(x) for x in chain):
            raise
        cause = next((x for x in reversed(chain) if _expected(x)), err)
        message = str(cause).strip() or repr(cause)
        err = cause
        print(f"medvl: {type(err).__name__}: {message}\n(--debug or MEDVL_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(console())
