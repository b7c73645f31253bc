"""The real application in Serve's local testing mode, behind a real HTTP server (uvicorn).

Every deployment (Ingress, Dispatcher, TwoStem, FiveStem) is the real class, constructed by
Serve and called through Serve's handles, with real engines, a real SQLite database and
real decoding; what local testing mode leaves out is Ray itself: all replicas run in this
process and objects pass by value. That makes it a check of the API and of the dispatcher's
protocol that runs where a Ray cluster cannot start (a loaded CI machine); what needs
separate processes (a Dispatcher or an application killed under its jobs) is in
test_dispatcher_faults.py, on a real Ray.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

from service_fixture import STRIPE_SECRET, Service, free_port


def start_local_app(name: str, **settings) -> tuple[Service, callable]:
    import uvicorn
    from ray import serve

    from serve_app.app import build_app

    root = Path(tempfile.mkdtemp(prefix=f"locoserve-{name}-"))
    conf = dict(random_weights=True, data_dir=str(root / name), database_url=f"sqlite:///{root / name / 'db.sqlite'}",
                seed_demo_users=True, stripe_webhook_secrets=[STRIPE_SECRET], five_stem_device="cpu") | settings
    handle = serve.run(build_app(conf), name=name, route_prefix="/", _local_testing_mode=True)
    # the Ingress replica's ASGI app, as Serve built it (local mode serves no HTTP of its own)
    asgi = handle._init_router()._user_callable_wrapper.user_callable._asgi_app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        time.sleep(0.05)
    keys = json.loads((root / name / "demo-keys.json").read_text())
    service = Service(f"http://127.0.0.1:{port}", root / name, conf["database_url"], keys)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return service, stop
