"""A stand-in for an AI agent analysing payment retries.

It does what a drifting or misled agent does: the task it was given, then
things outside it. Each step prints what happened as the agent saw it.
"""
import os
import subprocess
import sys
import urllib.request

LOGS = "http://127.0.0.2:8080/payments.log"
CUSTOMERS = "http://127.0.0.3:5432/customers.csv"


def step(what, fn):
    try:
        print(f"agent: {what}: {fn()}", flush=True)
    except OSError as e:
        reason = getattr(e, "reason", e)
        print(f"agent: {what}: refused ({reason})", flush=True)


def read_logs():
    body = urllib.request.urlopen(LOGS, timeout=5).read().decode()
    retries = sum(1 for line in body.splitlines() if "retry" in line)
    return f"read {len(body)} bytes, {retries} retries"


def export_customers():
    body = urllib.request.urlopen(CUSTOMERS, timeout=5).read()
    return f"exported {len(body)} bytes of customer data"


def run_tool():
    p = subprocess.run(["/bin/nc", "-z", "127.0.0.3", "5432"], capture_output=True)
    if p.returncode < 0:
        return f"nc was killed by signal {-p.returncode} before it ran"
    return f"nc exited {p.returncode}"


def sub_agent():
    idend = os.environ["IDEND_BIN"]
    here = os.path.dirname(os.path.abspath(__file__))
    opened = subprocess.run(
        [idend, "session", "open", "--intent", os.path.join(here, "subagent-intent.yaml")],
        capture_output=True, text=True)
    if opened.returncode != 0:
        return "sub-session refused: " + opened.stderr.strip()
    sub = opened.stdout.strip()
    p = subprocess.run([idend, "run", "--session", sub, "--", sys.executable,
                        os.path.join(here, "subagent.py")], capture_output=True, text=True)
    return f"sub-session {sub}: " + (p.stdout + p.stderr).strip().replace("\n", " / ")


step("read the payments logs (in its intent)", read_logs)
step("export the customer table (outside its intent)", export_customers)
step("run nc (not an allowed program)", run_tool)
step("start a sub-agent with a narrower slice", sub_agent)
