"""The access log is off by default and, when on, a rotating file under LLMASOS_HOME: 3,000 bad-key
requests once wrote a 12 MB log that only grew."""

from __future__ import annotations

import logging
import logging.config
import os
import stat

from llmasos.api import server


def test_no_access_log_by_default():
    config = server.logging_config(access_log=False)
    assert config["handlers"]["access"]["class"] == "logging.StreamHandler"
    assert not server.access_log_path().exists()


def test_the_access_log_rotates_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(server, "ACCESS_LOG_BYTES", 10_000)
    config = server.logging_config(access_log=True)
    path = server.access_log_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    logging.config.dictConfig(config)
    access = logging.getLogger("uvicorn.access")
    try:
        for i in range(3000):
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/probe/{i}", "1.1", 401)
    finally:
        for handler in access.handlers:
            handler.close()
        access.handlers.clear()
    files = sorted(path.parent.glob("access.log*"))
    assert [f.name for f in files] == ["access.log", "access.log.1", "access.log.2", "access.log.3"]
    assert sum(f.stat().st_size for f in files) <= 4 * 10_000 + 200
    assert "/probe/2999" in path.read_text()
