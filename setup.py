from setuptools import find_packages, setup

setup(
    name="mt-repro",
    version="0.1.0",
    description="Mean Teacher (Tarvainen & Valpola, NIPS 2017) reproduced faithfully on current PyTorch",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mt_repro", "mt_repro.*", "legacy_patches", "legacy_patches.*"])
    + ["mt_repro.original_configs"],
    package_dir={"mt_repro.original_configs": "original_configs"},
    package_data={"mt_repro.original_configs": ["*.toml", "convnet/*.toml"], "mt_repro.configs": ["*.toml", "methods/*.toml", "protocols/*.toml"],
                  "mt_repro.paper": ["*.csv"], "mt_repro.data": ["*.sha256"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy",
        "pandas",
        "scipy",
        "click>=8.0",
        "tqdm",
        "msgpack",
        "pillow",
        "libcst>=1.0.1",
        "scikit-learn",  # the bundled 8x8 digits of `mt-repro digits`
        "matplotlib",    # `mt-repro plot` and the HTML report
        "tensorboard",   # each run's event files (mt_repro.logs.events)
    ],
    extras_require={"test": ["pytest", "pytest-xdist>=3.2", "hypothesis", "submitit"],
                    "slurm": ["submitit"]},   # --launcher slurm
    entry_points={"console_scripts": ["mt-repro=mt_repro.cli:main"]},
)
