"""The inference toolkit: the user's handler functions, or framework defaults, as one pipeline.

A model directory may hold ``code/inference.py`` (or the file ``SAGEMAKER_PROGRAM`` names, in
``SAGEMAKER_SUBMIT_DIRECTORY`` if set: see :mod:`coldbrew.worker.container`) with
any of these functions, as in the SageMaker inference toolkit:

- ``model_fn(model_dir)`` -> model; default: the framework whose model file is in ``model_dir``
- ``input_fn(input_data, content_type)`` -> data; default: the framework's (XGBoost also reads
  text/libsvm), else CSV/JSON/JSON Lines/NPY into a 2-D float array
- ``predict_fn(data, model)`` -> prediction; default: the framework's, else ``model.predict(data)``
- ``output_fn(prediction, accept)`` -> body; default: JSON, CSV, JSON Lines or NPY as ``accept`` asks
- ``transform_fn(model, input_data, content_type, accept)`` -> body, instead of the three above
- ``pre_model_fn(model_dir)`` and ``model_warmup_fn(model_dir, model)``: optional load hooks

``input_data`` is a ``str`` for text/csv and application/json bodies and ``bytes`` otherwise; a
body is ``bytes``/``str`` or a ``(body, content_type)`` tuple (without one, the Content-Type
is the requested ``accept``).

**Context.** Every function may take one more parameter, ``context`` (a
:class:`~coldbrew.worker.context.Context`), after the ones above. Whether it does is decided
once, at load, from its signature: it gets the context if it declares more positional
parameters than the toolkit passes (``def input_fn(body, content_type, context)``), or a
keyword-only parameter named ``context``; ``*args`` alone gets no context, as in the toolkit.
A signature that fits neither form fails the load with a message, rather than failing every
request. (The toolkit counts parameters on every call; once at load is cheaper and fails early.)

With ``environment_concurrency`` > 1 the functions run in a thread pool, so they must be
thread-safe (scikit-learn's ``predict`` is).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from coldbrew.worker import container, frameworks, runtimes
from coldbrew.worker.context import Context
from coldbrew.worker.errors import BadRequest, ModelLoadError, one_line
from coldbrew.worker.media import ANY, JSON, OCTET_STREAM, TEXT_TYPES, charset, first_concrete, media_type

logger = logging.getLogger(__name__)

DEFAULT_PROGRAM = container.DEFAULT_PROGRAM

# Arguments the toolkit passes each function, before the optional context.
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "pre_model_fn": ("model_dir",),
    "model_fn": ("model_dir",),
    "model_warmup_fn": ("model_dir", "model"),
    "input_fn": ("input_data", "content_type"),
    "predict_fn": ("data", "model"),
    "output_fn": ("prediction", "accept"),
    "transform_fn": ("model", "input_data", "content_type", "accept"),
}

# Every adapted function takes its toolkit arguments followed by the context.
Handler = Callable[..., Any]


class InferenceHandler:
    """A loaded model and the functions that serve it. Build one with :func:`load_handler`."""

    def __init__(
        self,
        model_dir: str,
        model: Any,
        transform_fn: Handler,
        default_accept: str,
        body_source: str,
        warm_up: bytes | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.model = model
        self.default_accept = default_accept
        # A CSV request this model answers without running any of the user's code, or None.
        self.warm_up = warm_up
        self._transform_fn = transform_fn
        self._body_source = body_source  # the function named when a returned body is unusable

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, context: Context
    ) -> tuple[bytes, str]:
        """Run one request through the pipeline; return the response body and its Content-Type.

        Raises whatever the handlers raise; :func:`coldbrew.worker.errors.describe` turns that
        into a status and message.
        """
        # A body without a Content-Type is octet-stream (RFC 9110 §8.3), which names the
        # problem in the default input_fn's 415 better than an empty string would.
        content_type = content_type or OCTET_STREAM
        if not accept or accept == ANY:
            accept = self.default_accept
        data: bytes | str = body
        if media_type(content_type) in TEXT_TYPES:
            try:
                data = body.decode(charset(content_type))
            except (UnicodeDecodeError, LookupError) as exc:
                raise BadRequest(f"the body does not decode as {content_type!r}: {exc}") from None
        result = self._transform_fn(self.model, data, content_type, accept, context)
        return self._response(result, accept)

    def _response(self, result: Any, accept: str) -> tuple[bytes, str]:
        content_type: Any = None
        if isinstance(result, tuple):
            if len(result) != 2:
                raise TypeError(
                    f"{self._body_source} returned a {len(result)}-tuple: return (body, content_type)"
                )
            result, content_type = result
        if isinstance(result, bytes):
            body = result
        elif isinstance(result, str):
            body = result.encode()
        elif isinstance(result, (bytearray, memoryview)):
            body = bytes(result)
        else:
            raise TypeError(
                f"{self._body_source} returned {type(result).__name__}: "
                "return bytes, str or a (body, content_type) tuple"
            )
        if content_type is None:
            content_type = first_concrete(accept) or self.default_accept
        # It becomes a header: refuse anything that could split it.
        if not isinstance(content_type, str) or not (content_type.isascii() and content_type.isprintable()):
            raise TypeError(
                f"{self._body_source} returned content type {content_type!r}: expected an ASCII str"
            )
        return body, content_type


def load_handler(model_dir: str) -> InferenceHandler:
    """Import the user's module, fill in defaults, check them, and load the model.

    The image (``COLDBREW_IMAGE``, the model's ``Image``) decides the defaults when it is one of
    SageMaker's framework containers; otherwise the files in ``model_dir`` do (see
    :mod:`coldbrew.worker.runtimes`). Raises :class:`ModelLoadError` with a one-line message for
    the status pipe.
    """
    entry = container.entry_point(model_dir, os.environ)
    has_requirements = container.note_requirements(entry, os.environ)
    try:
        return _load(model_dir, entry)
    except ModelLoadError as exc:
        if has_requirements and _caused_by_import(exc):
            # The likeliest fix is a package the user expected SageMaker to pip-install.
            raise ModelLoadError(f"{exc} ({container.REQUIREMENTS_NOTE})") from exc
        raise


def _load(model_dir: str, entry: container.EntryPoint) -> InferenceHandler:
    module = _import_program(entry)
    found = {name: _user_function(module, name, entry) for name in _PARAMETERS} if module else {}
    user = {name: fn for name, fn in found.items() if fn is not None}

    pipeline = [name for name in ("input_fn", "predict_fn", "output_fn") if name in user]
    if "transform_fn" in user and pipeline:
        raise ModelLoadError(
            f"{entry.label} defines transform_fn together with {', '.join(pipeline)}: "
            "define either transform_fn alone, or any of input_fn, predict_fn and output_fn"
        )

    image = os.environ.get("COLDBREW_IMAGE") or None
    framework = _framework(model_dir, entry, image, required="model_fn" not in user)
    context = Context(model_dir)
    if "pre_model_fn" in user:
        _run_hook("pre_model_fn", _adapt(user["pre_model_fn"], "pre_model_fn"), model_dir, context)
    if "model_fn" in user:
        model = _run_hook("model_fn", _adapt(user["model_fn"], "model_fn"), model_dir, context)
    else:
        assert framework is not None  # _framework raised otherwise
        model = _run_hook(
            f"{framework.NAME} model_fn", _adapt(framework.model_fn, "model_fn"), model_dir, context
        )
    if "model_warmup_fn" in user:
        _run_hook(
            "model_warmup_fn", _adapt(user["model_warmup_fn"], "model_warmup_fn"), model_dir, model, context
        )

    default_accept = (
        os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT")
        or (
            # A framework container answers in its own default type (CSV for XGBoost) when the
            # request names none; coldbrew's own default is JSON.
            getattr(framework, "DEFAULT_ACCEPT", None) if runtimes.image_runtime(image) else None
        )
        or JSON
    )
    if "transform_fn" in user:
        transform_fn = _adapt(user["transform_fn"], "transform_fn")
        return InferenceHandler(model_dir, model, transform_fn, default_accept, "transform_fn")

    # The user's function, else the framework's, else the generic codec.
    user_input_fn = user.get("input_fn") or getattr(framework, "input_fn", None)
    user_output_fn = user.get("output_fn") or getattr(framework, "output_fn", None)
    check_accept: Callable[[str], object] | None = None
    if user_input_fn is None or "output_fn" not in user:
        # Imported only when needed: it pulls in numpy, which a user's own functions may not use.
        from coldbrew.worker import codecs

        user_input_fn = user_input_fn or codecs.decode
        user_output_fn = user_output_fn or codecs.encode
        if "output_fn" not in user:
            # An Accept the default output_fn (or a framework's, which writes the same types)
            # cannot write is a 406 before any work, not after predict.
            check_accept = codecs.negotiate
    assert user_input_fn is not None and user_output_fn is not None  # filled in just above
    input_fn = _adapt(user_input_fn, "input_fn")
    if "predict_fn" in user:
        predict_fn = _adapt(user["predict_fn"], "predict_fn")
    else:
        predict_fn = _adapt(
            framework.predict_fn if framework else frameworks.generic_predict_fn, "predict_fn"
        )
    output_fn = _adapt(user_output_fn, "output_fn")

    def pipeline_fn(model: Any, data: bytes | str, content_type: str, accept: str, context: Context) -> Any:
        if check_accept is not None:
            check_accept(accept)
        return output_fn(predict_fn(input_fn(data, content_type, context), model, context), accept, context)

    warm_up = _warm_up_body(framework, model) if not user else None
    return InferenceHandler(model_dir, model, pipeline_fn, default_accept, "output_fn", warm_up)


def _warm_up_body(framework: frameworks.Framework | None, model: Any) -> bytes | None:
    """The framework's throwaway request for ``model`` (only frameworks whose default functions
    run nothing of the user's define ``warm_up_body``), or None."""
    make = getattr(framework, "warm_up_body", None)
    if make is None:
        return None
    try:
        body = make(model)
    except Exception:
        logger.debug("no warm-up request for this model", exc_info=True)
        return None
    return body if isinstance(body, bytes) else None


def _caused_by_import(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ImportError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _import_program(entry: container.EntryPoint) -> ModuleType | None:
    code_dir = entry.code_dir
    path = entry.path
    if not path.is_file():
        if entry.named:
            raise ModelLoadError(
                f"SAGEMAKER_PROGRAM is {os.environ['SAGEMAKER_PROGRAM']!r} but {path} does not exist"
            )
        return None
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) != str(path):
        raise ModelLoadError(
            f"{entry.label} has the name of the module {name!r}, which is already imported: rename it"
        )
    # On sys.path so the program can import its sibling modules, as on SageMaker.
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, so classes it defines can be pickled and unpickled by name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        logger.error("importing %s failed", path, exc_info=exc)
        raise ModelLoadError(f"importing {entry.label} raised {one_line(exc)}") from exc
    return module


def _user_function(module: ModuleType, name: str, entry: container.EntryPoint) -> Handler | None:
    fn = getattr(module, name, None)
    if fn is not None and not callable(fn):
        raise ModelLoadError(f"{name} in {entry.label} is a {type(fn).__name__}, not a function")
    return fn


def _framework(
    model_dir: str, entry: container.EntryPoint, image: str | None, required: bool
) -> frameworks.Framework | None:
    """The framework whose defaults apply, or None (only when the user's model_fn loads the model)."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    chosen = runtimes.image_runtime(image) or os.environ.get("COLDBREW_RUNTIME", "").strip().lower()
    framework = frameworks.for_runtime(chosen) if chosen else None
    if framework is not None:
        # The image (or COLDBREW_RUNTIME) names the framework: its defaults apply whatever the
        # files are called, as in that container, which loads the model file its own way.
        find = getattr(framework, "container_model_file", framework.find_model_file)
        try:
            found = find(directory)
        except ModelLoadError:
            if required:
                raise
            return framework
        if found is None and required:
            # A model the image's framework cannot load by default, but another framework of
            # coldbrew's can (say, an embedding model directory under a PyTorch image): serve it
            # rather than refuse what SageMaker would have needed user code for.
            other = _detect_quietly(model_dir)
            if other is not None:
                logger.info("%s: no %s model file; serving it as %s", model_dir, framework.NAME, other.NAME)
                return other
            served = f"the image {image}" if runtimes.image_runtime(image) else f"COLDBREW_RUNTIME={chosen}"
            raise ModelLoadError(
                f"No {framework.NAME} model file found in {model_dir}: {served} serves "
                f"{framework.EXPECTED}, or a {entry.label} with model_fn"
            )
        return framework
    try:
        framework = frameworks.detect(model_dir)
    except ModelLoadError:
        if required:
            raise
        return None  # the user's model_fn loads the model; the directory's contents are its business
    if framework is None and required:
        raise ModelLoadError(
            f"No model file found in {model_dir}: expected {frameworks.expected_files()}, "
            f"or a {entry.label} with model_fn"
        )
    return framework


def _detect_quietly(model_dir: str) -> frameworks.Framework | None:
    try:
        return frameworks.detect(model_dir)
    except ModelLoadError:
        return None


def _run_hook(label: str, fn: Handler, *args: Any) -> Any:
    try:
        return fn(*args)
    except ModelLoadError:
        raise
    except BaseException as exc:
        logger.error("%s failed", label, exc_info=exc)
        raise ModelLoadError(f"{label} raised {one_line(exc)}") from exc


def _adapt(fn: Handler, name: str) -> Handler:
    """``fn`` as a callable taking the toolkit's arguments for ``name`` plus the context."""
    expected = _PARAMETERS[name]
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return _without_context(fn)  # builtins and C functions: called the toolkit's way
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    keyword_only = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    required_keywords = [n for n, p in keyword_only.items() if p.default is p.empty and n != "context"]
    arity = len(expected)
    if required_keywords or len(required) > arity + 1 or (len(positional) < arity and not var_positional):
        base = ", ".join(expected)
        raise ModelLoadError(
            f"{name}{signature} does not fit the toolkit: it must take ({base}) or ({base}, context)"
        )
    if len(positional) > arity:
        return fn
    if "context" in keyword_only:
        return lambda *args: fn(*args[:-1], context=args[-1])
    return _without_context(fn)


def _without_context(fn: Handler) -> Handler:
    def call(*args: Any) -> Any:
        return fn(*args[:-1])

    return call
