"""asl-tf: Action Sensitivity Learning (ICCV 2023) for temporal action localization in Keras 3."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _pins(name):
    """Read exact pins from a requirements file (one source of truth for setup.py and make)."""
    out = []
    for line in (HERE / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            out.append(line)
    return out


setup(
    name="asl-tf",
    version="0.1.0",
    description="Action Sensitivity Learning for temporal action localization in TensorFlow 2 / Keras 3",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["asl_tf", "asl_tf.*", "export", "export.*", "edge", "edge.*"]),
    include_package_data=True,
    package_data={"": ["*.yaml", "*.json"]},
    install_requires=_pins("requirements.txt"),
    extras_require={
        # Same TensorFlow package with the CUDA wheels: never two TensorFlows in one venv.
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "jax": ["jax==0.10.2", "jaxlib==0.10.2"],
        "test": ["pytest==9.2.0", "jax==0.10.2", "jaxlib==0.10.2"] + _pins("requirements-beam.txt"),
        # Apache Beam batch pipelines (`asl-beam`); protobuf pinned < 7 in requirements.txt for it
        "beam": _pins("requirements-beam.txt"),
    },
    entry_points={
        "console_scripts": [
            "asl-data=asl_tf.cli.data:run",
            "asl-eval=asl_tf.cli.eval:run",
            "asl-import=asl_tf.cli.import_ckpt:run",
            "asl-train=asl_tf.cli.train:run",
            "asl-export=export.cli:run",
            "asl-demo=asl_tf.cli.demo:run",
            "asl-edge=edge.cli:main",
            "asl-beam=asl_tf.cli.beam:run",
            "asl-extract-features=asl_tf.cli.extract:run",
            "asl-demo-video=asl_tf.cli.demo_video:run",
        ]
    },
)
