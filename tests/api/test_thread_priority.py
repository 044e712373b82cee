"""A server's HTTP threads yield the CPU to the kernel's: the event loop's thread raises its niceness
after starting the kernel's thread and the audit writer's, so those keep their own and the threads the
loop starts later (request pool, tokenizers) inherit the loop's."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from llmasos.api.app import create_app
from llmasos.api.thread_priority import thread_niceness, yield_cpu_to_the_kernel
from llmasos.kernel.boot import boot
from llmasos.security.admin import ensure_admin


def in_thread(fn):
    """Run `fn` in a fresh thread (a niceness raised there cannot be lowered back without privilege,
    so never in pytest's own thread) and return what it returned."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()))
    thread.start()
    thread.join()
    return result["value"]


def test_the_calling_thread_alone_is_lowered_and_threads_it_starts_later_inherit_it():
    def scenario():
        before = threading.Thread(target=threading.Event().wait, args=(2,), daemon=True)
        before.start()
        base = thread_niceness()
        assert yield_cpu_to_the_kernel(5)  # relative: 5 below what it was
        assert not yield_cpu_to_the_kernel(0)
        seen = {}
        later = threading.Thread(target=lambda: seen.setdefault("later", thread_niceness()))
        later.start()
        later.join()
        return base, thread_niceness(), thread_niceness(before.native_id), seen["later"]

    base, own, before, later = in_thread(scenario)
    assert (own, before, later) == (base + 5, base, base + 5)
    assert thread_niceness() == base  # pytest's thread is untouched


@pytest.mark.parametrize("niceness", [0, 7])
def test_the_served_app_lowers_its_loop_and_request_threads_below_the_kernel(niceness):
    syscalls = boot(interface="http")
    _, key = ensure_admin(syscalls.apps)
    app = create_app(syscalls, http_niceness=niceness)
    seen = {}

    @app.get("/niceness-probe")
    def probe() -> dict:  # a sync route runs on the request thread pool
        seen["request"] = thread_niceness()
        return {}

    base = thread_niceness()
    with TestClient(app) as client:
        assert client.get("/niceness-probe", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        kernel = next(t for t in threading.enumerate() if t.name == "llmasos-kernel")
        assert thread_niceness(kernel.native_id) == base
        # The audit writer too: a generation's start row holds its headers, its end row its [DONE].
        assert thread_niceness(syscalls.audit._writer._thread.native_id) == base
    assert seen["request"] == base + niceness
    syscalls.close()
