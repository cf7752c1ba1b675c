"""A sub-agent that was only given the summary task, and tries the logs."""
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.2:8080/payments.log", timeout=5).read()
    print("sub-agent: read the payments logs")
except OSError as e:
    print(f"sub-agent: payments logs refused ({getattr(e, 'reason', e)})")
