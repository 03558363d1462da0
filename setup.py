"""The one build setting pyproject.toml cannot express: data folders kept at the repository's top level
travel inside the package.

``targets/`` is installed as ``deploykit/_data/targets`` (read through importlib.resources; see
deploykit/targets.py), so a wheel or sdist install has every shipped target while git keeps one copy.
A source checkout, an editable install or ``PYTHONPATH=checkout`` reads the top-level folder itself.
"""

from setuptools import find_packages, setup

# package name inside deploykit → the repository folder it is built from
SHIPPED_DATA = {"deploykit._data.targets": "targets"}

setup(
    packages=[*find_packages(include=["deploykit", "deploykit.*"]), *SHIPPED_DATA],
    package_dir=SHIPPED_DATA,
    package_data={package: ["*.yaml"] for package in SHIPPED_DATA},
)
