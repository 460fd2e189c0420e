"""Packaging beyond pyproject.toml: the repository's configs/ folder is shipped inside the wheel as promptiqa/configs,
and the package's data files (the paper's figures, the published splits) beside their modules.

pyproject.toml cannot both discover packages and add one from another folder, hence this file; the metadata stays in
pyproject.toml. promptiqa.resources.configs_dir() finds the folder either way (checkout or install).
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["promptiqa", "promptiqa.*"]) + ["promptiqa.configs"],
      package_dir={"promptiqa.configs": "configs"},
      package_data={"promptiqa.configs": ["*.yaml"], "promptiqa.paper": ["paper_tables.csv", "README.md"],
                    "promptiqa.data": ["published_splits.json.gz"]})
