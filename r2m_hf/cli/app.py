"""``r2m-hf app`` and ``r2m-hf space``: the detector as a local Gradio app, and as a Hugging Face Space.

``app`` builds the app of `r2m_hf.detector.app` (Gradio is imported only then: the ``r2m-hf[app]`` extra) and serves
it on the loopback interface until Ctrl-C. ``space`` calls `r2m_hf.detector.space.create_space` and prints the
Space's URL; the token is read from ``--token``, ``HF_TOKEN`` or the stored login and never printed.
"""

from __future__ import annotations

import argparse

from ._common import add_debug, add_verb
from .predict import add_decision_options, add_detector_options


def register(subparsers) -> None:
    """Add the ``app`` and ``space`` verbs."""
    app = add_verb(subparsers, "app", run_app, help="serve the detector as a Gradio app (needs r2m-hf[app])")
    app.add_argument("model", help="model folder or Hub repo id")
    app.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    app.add_argument("--port", type=int, default=None, help="default: the first free port from 7860")
    app.add_argument(
        "--share", choices=("never", "gradio"), default="never",
        help="gradio: also open a temporary public link through Gradio's tunnel (needs network)",
    )  # fmt: skip
    app.add_argument("--title", default=None, help="the page heading")
    add_detector_options(app)
    add_decision_options(app)
    add_debug(app)

    space = add_verb(subparsers, "space", run_space, help="create a Hugging Face Space (Gradio) serving a Hub model")
    space.add_argument("model_repo", help="the model on the Hub, ORG/NAME")
    space.add_argument("space_repo", help="the Space to create or update, ORG/NAME")
    space.add_argument("--private", action="store_true", help="create the Space private")
    space.add_argument("--token", default=None, help="write token (default: HF_TOKEN or `hf auth login`)")
    space.add_argument("--title", default=None, help="the Space's title (default: the model's name)")
    space.add_argument(
        "--requirement", default=None, help="how the Space installs r2m-hf (default: r2m-hf[app]==this version)"
    )
    add_debug(space)


def run_app(args: argparse.Namespace) -> int:
    """Build the app and serve it until Ctrl-C."""
    from ..detector.app import build_app, import_gradio, serve
    from ..errors import ConfigError

    import_gradio()  # a missing extra fails before the model loads
    if args.port is not None and not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    demo = build_app(
        args.model, title=args.title, device=args.device, faces=args.faces, align=args.align,
        all_faces=args.all_faces, batch_size=args.batch_size, fake_label=args.fake_label,
        face_detector=args.face_detector, threshold=args.threshold, frames=args.frames, aggregate=args.aggregate,
    )  # fmt: skip
    url = serve(demo, host=args.host, port=args.port, share=args.share == "gradio", block=False)
    public = f" and {demo.share_url}" if getattr(demo, "share_url", None) else ""
    print(f"serving the app of {args.model} at {url}{public}; Ctrl-C stops it", flush=True)
    demo.block_thread()
    return 0


def run_space(args: argparse.Namespace) -> int:
    """Create or update the Space and print its URL."""
    from ..detector.space import create_space

    result = create_space(
        args.model_repo, args.space_repo, private=args.private, token=args.token, title=args.title,
        requirement=args.requirement,
    )  # fmt: skip
    print(f"Space {result.space_repo}: {result.url}")
    print(f"commit {result.commit_url}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
