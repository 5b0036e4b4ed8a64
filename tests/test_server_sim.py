"""The simulator through the API: trace uploads are validated, runs complete with curves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server_harness import Server, make_server, wait_for

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,65536,2,T4\nn1,32000,65536,2,T4\n"
PODS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(
    f"p{i},2000,1024,1,{(250, 500, 1000)[i % 3]}\n" for i in range(12)
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path, "1xA100-80GB")


def test_upload_validate_and_run(server: Server) -> None:
    with server.client() as c:
        c.headers["Content-Type"] = "text/csv"
        assert c.put("/sim/traces/nodes.csv", content=NODES).status_code == 201
        assert c.put("/sim/traces/pods.csv", content=PODS).status_code == 201
        bad = c.put("/sim/traces/bad.csv", content=PODS.replace("p3,2000", "p3,-5"))
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("body: bad.csv, row 5, column 'cpu_milli'")
        assert not (server.home / "traces" / "bad.csv").exists()
        assert 400 <= c.put("/sim/traces/..%2Fx.csv", content=NODES).status_code < 500
        assert c.put("/sim/traces/x.txt", content=NODES).status_code == 422
        listed = {t["name"]: (t["kind"], t["rows"]) for t in c.get("/sim/traces").json()}
        assert listed == {"nodes.csv": ("nodes", 2), "pods.csv": ("pods", 12)}
        del c.headers["Content-Type"]
        wrong = c.post("/sim/runs", json={"nodes": "pods.csv", "pods": "pods.csv"})
        assert wrong.status_code == 422 and "not a nodes list" in wrong.json()["detail"]
        unknown = c.post("/sim/runs", json={"policies": ["nosuch"]})
        assert unknown.status_code == 422 and "nosuch" in unknown.json()["detail"]
        run = c.post(
            "/sim/runs",
            json={
                "nodes": "nodes.csv",
                "pods": "pods.csv",
                "policies": ["bestfit", "fgd"],
                "seeds": [1, 2],
                "tune": 0,
            },
        )
        assert run.status_code == 202
        run_id = run.json()["id"]
        done = wait_for(
            lambda: (
                (v := c.get(f"/sim/runs/{run_id}").json())["status"] in ("done", "failed") and v
            ),
            timeout=60,
        )
    assert done["status"] == "done", done["error"]
    assert done["runs_done"] == done["runs_total"] == 4
    for policy in ("bestfit", "fgd"):
        curve = done["result"]["policies"][policy]["unallocated_gpu_pct"]
        assert list(curve) == [str(x) for x in range(131)]
        # 12 tasks ask for 4 x (0.25 + 0.5 + 1) = 7 GPUs of 4: everything arrived is 175 %
        assert curve["0"] is None or curve["0"] > 90
