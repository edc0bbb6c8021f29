"""Ctrl-C (SIGINT) during a long call raises KeyboardInterrupt soon, and other threads run meanwhile."""
import os
import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import sys, threading, time
    import aesthete
    kind, model, photo, out = sys.argv[1:5]
    ticks = [0]
    def count():
        while True:
            ticks[0] += 1
            time.sleep(0.01)
    threading.Thread(target=count, daemon=True).start()
    m = aesthete.load(model, device="cpu")
    before = ticks[0]
    print("ready", flush=True)
    t0 = time.monotonic()
    try:
        if kind == "saliency":
            m.saliency(photo, smoothgrad=1000000, full_size=False)
        elif kind == "train":
            import os
            folder = os.path.dirname(os.path.dirname(photo))
            aesthete.train(os.path.join(folder, "train.csv"), os.path.join(folder, "images"), out, epochs=100000,
                           size=32, resize_to=36, batch=8, head="linear", device="cpu")
        else:
            m.personalise([photo] * 40, [0.5] * 40, epochs=100000, mode="adapters")
        print("finished", flush=True)
    except KeyboardInterrupt as e:
        print(f"KeyboardInterrupt after {time.monotonic() - t0:.1f}s, ticks {ticks[0] - before}", flush=True)
""")


def interrupt(kind, data, tmp_path):
    """Runs a long `kind` call in a child process, sends SIGINT after 1.5 s; returns the child's output."""
    env = dict(os.environ, AE_LOG="warn")
    child = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(data.generic), data.photos(1)[0], str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(1.5)  # well inside the call
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out.startswith("KeyboardInterrupt after"), (out, err)
    seconds, ticks = float(out.split()[2][:-2]), int(out.split()[4])
    assert seconds < 10
    assert ticks > 20, "other Python threads did not run while the engine worked (GIL held?)"
    return out


def test_ctrl_c_interrupts_saliency(data, tmp_path):
    interrupt("saliency", data, tmp_path)


def test_ctrl_c_interrupts_personalise(data, tmp_path):
    interrupt("personalise", data, tmp_path)


def test_ctrl_c_interrupts_training_after_saving_its_state(data, tmp_path):
    interrupt("train", data, tmp_path / "run")
    assert (tmp_path / "run" / "last.safetensors").exists(), "no state saved: resume=True could not continue"
    assert "<b>Interrupted</b>" in (tmp_path / "run" / "report.html").read_text()  # as `aesthete train` leaves it
