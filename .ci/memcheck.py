"""valgrind memcheck of every public kernel: no invalid access, no definite leak.

    python .ci/memcheck.py            # runs valgrind on this file's exercise
    python .ci/memcheck.py --exercise # the exercise alone (what valgrind runs)

The exercise calls every public kernel on small arrays (valid calls checked
against nnkernels.reference, calls with out= buffers, calls that must raise)
with 1 and 2 threads, then drops every reference.  valgrind writes XML; an
error counts against nnkernels when one of its stack frames lies in an
nnkernels module or in the OpenMP runtime the wheel vendors
(nnkernels.libs).  CPython, NumPy and OpenBLAS keep memory until exit
and are not ours to judge, so their records are counted and shown, not failed.
Fails on any invalid read/write, use of an uninitialised value, bad free or
definitely lost block that involves nnkernels.  Run it against an installed
nnkernels, from a directory where the source tree cannot shadow it.
"""

import collections
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

LEAK_KINDS_FAILED = {"Leak_DefinitelyLost"}
LEAK_KINDS_IGNORED = {"Leak_PossiblyLost", "Leak_StillReachable", "Leak_IndirectlyLost"}


def exercise():
    import numpy as np
    import nnkernels as nk
    from nnkernels import reference as ref

    rng = np.random.default_rng(0)
    n, c, k = 6, 5, 7
    checked = 0

    def close(got, want):
        nonlocal checked
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            if w is None:
                assert g is None
            else:
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        checked += 1

    def raises(exc, fn, *args, **kw):
        try:
            fn(*args, **kw)
        except exc:
            return
        raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")

    for threads in (1, 2):
        nk.set_num_threads(threads)
        for dtype in (np.float32, np.float64):
            z = rng.standard_normal((n, c)).astype(dtype)
            g = rng.standard_normal((n, c)).astype(dtype)
            labels = rng.integers(0, c, n)
            labels[1] = -100
            probs = rng.uniform(0.05, 0.95, (n, c)).astype(dtype)
            target01 = rng.integers(0, 2, (n, c)).astype(dtype)
            out = np.empty_like(z)

            for name in ("sigmoid", "relu"):
                close(getattr(nk, name)(z), getattr(ref, name)(z))
                close(getattr(nk, name)(z, out=out), getattr(ref, name)(z))
                raises(TypeError, getattr(nk, name), z.astype(np.int32))
            a = ref.sigmoid(z)
            for name in ("sigmoid_backward", "tanh_backward", "relu_backward"):
                close(getattr(nk, name)(g, a), getattr(ref, name)(g, a))
                close(getattr(nk, name)(g, a, out=out), getattr(ref, name)(g, a))
                raises(ValueError, getattr(nk, name), g, a[:, :-1])
            for name in ("softmax", "log_softmax"):
                for axis in (-1, 0):
                    close(getattr(nk, name)(z, axis=axis), getattr(ref, name)(z, axis=axis))
                raises(ValueError, getattr(nk, name), z, out=out.T)
            p = ref.softmax(z)
            close(nk.softmax_backward(g, p), ref.softmax_backward(g, p))

            weight = rng.uniform(0.5, 2.0, c).astype(dtype)
            for kw in ({}, {"weight": weight, "label_smoothing": 0.1},
                       {"reduction": "none"}, {"reduction": "sum", "axis": 0}):
                zz = z.T.copy() if kw.get("axis") == 0 else z
                close(nk.softmax_cross_entropy(zz, labels, **kw),
                      ref.softmax_cross_entropy(zz, labels, **kw))
                close(nk.softmax_cross_entropy_backward(zz, labels, **kw),
                      ref.softmax_cross_entropy_backward(zz, labels, **kw))
            close(nk.softmax_cross_entropy(z, p), ref.softmax_cross_entropy(z, p))
            bad = labels.copy()
            bad[0] = c
            raises(ValueError, nk.softmax_cross_entropy, z, bad)

            close(nk.sigmoid_binary_cross_entropy(z, target01, pos_weight=weight),
                  ref.sigmoid_binary_cross_entropy(z, target01, pos_weight=weight))
            close(nk.binary_cross_entropy(probs, target01, reduction="none"),
                  ref.binary_cross_entropy(probs, target01, reduction="none"))
            raises(ValueError, nk.binary_cross_entropy, probs + 1, target01)
            close(nk.mse(z, g, reduction="sum"), ref.mse(z, g, reduction="sum"))

            x = rng.standard_normal((n, k)).astype(dtype)
            w = rng.standard_normal((c, k)).astype(dtype)
            b = rng.standard_normal(c).astype(dtype)
            for act in (None, "sigmoid", "tanh", "relu"):
                a_out = nk.dense_forward(x, w, b, act)
                close(a_out, ref.dense_forward(x, w, b, act))
                close(nk.dense_backward(g, x, w, a_out, act),
                      ref.dense_backward(g, x, w, a_out, act))
            buffers = (np.zeros_like(w), np.zeros_like(b), np.zeros_like(x))
            nk.dense_backward(g, x.T.copy().T, w, need_input_grad=False,
                              accumulate=True, out=buffers)
            raises(ValueError, nk.dense_forward, x, w[:, :-1])
    nk.set_num_threads(1)
    print(f"memcheck exercise: {checked} results checked against the reference")


def find_errors(xml_path, package_dirs):
    """(ours, others): valgrind error records, split by whether a frame is ours."""
    ours, others = [], []
    for error in ET.parse(xml_path).getroot().iter("error"):
        kind = error.findtext("kind")
        if kind in LEAK_KINDS_IGNORED:
            continue
        objects = [frame.findtext("obj") or "" for frame in error.iter("frame")]
        what = error.findtext("what") or error.findtext("xwhat/text") or kind
        record = (kind, what, [o for o in objects if o][:8])
        mine = any(o.startswith(package_dirs) for o in objects)
        (ours if mine else others).append(record)
    return ours, others


def main():
    import nnkernels
    package = os.path.dirname(os.path.abspath(nnkernels.__file__))
    package_dirs = (package + os.sep, package + ".libs" + os.sep)
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "memcheck.xml")
        env = dict(os.environ, PYTHONMALLOC="malloc")   # let valgrind see every block
        cmd = ["valgrind", "--tool=memcheck", "--leak-check=full",
               "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
               "--num-callers=30", "--xml=yes", f"--xml-file={xml_path}",
               sys.executable, os.path.abspath(__file__), "--exercise"]
        print("$", " ".join(cmd), flush=True)
        run = subprocess.run(cmd, env=env)
        if run.returncode != 0:
            sys.exit(f"the exercise failed under valgrind (exit {run.returncode})")
        ours, others = find_errors(xml_path, package_dirs)
    print(f"memcheck: {len(ours)} error(s) involving nnkernels; {len(others)} elsewhere "
          "(CPython, NumPy, SciPy/OpenBLAS: shown, not judged)")
    grouped = collections.Counter()
    for kind, what, objects in others:     # by kind and the first library named
        libraries = [os.path.basename(o) for o in objects if "vgpreload" not in o]
        grouped[kind, libraries[0] if libraries else "?"] += 1
    for (kind, library), count in grouped.most_common():
        print(f"  elsewhere: {count:3d} x {kind} in {library}")
    for kind, what, objects in ours:
        print(f"  NNKERNELS: {kind}: {what}\n    " + "\n    ".join(objects))
    sys.exit(1 if ours else 0)


if __name__ == "__main__":
    if "--exercise" in sys.argv[1:]:
        exercise()
    else:
        main()
