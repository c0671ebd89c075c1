import os

from setuptools import find_packages, setup


def read(name):
    with open(os.path.join(os.path.dirname(__file__), name)) as f:
        return f.read()


DEVSWIFT = ["swift >= 2.30"]
KEYSTONE = ["python-keystoneclient >= 4.0", "keystoneauth1 >= 4.0"]
# A real Keystone for the tests of Keystone v3 authentication.
DEVKEYSTONE = ["keystone", "keystonemiddleware"]
ENCRYPTION = ["cryptography >= 41"]
# bases.py reads RelStorage's private names (_tpc_phase._lock_and_move, _adapter,
# _options), found from RelStorage 3.4 to 4.3; a new major version may rename them.
RELSTORAGE = ["RelStorage >= 3.4, < 5"]
# migrate --s3 reads the bucket of a zodb-s3blobs deployment as it does, with boto3.
S3 = ["boto3 >= 1.26"]

setup(
    name="zodb-swiftblobs",
    version="0.1.0.dev0",
    description="Keep ZODB blobs in OpenStack Swift: a storage wrapper with a local cache",
    long_description=read("README.rst") + "\n\n" + read("CHANGES.rst"),
    long_description_content_type="text/x-rst",
    license="ZPL-2.1",
    keywords="ZODB blob OpenStack Swift Zope Plone storage",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Framework :: ZODB",
        "Framework :: Zope",
        "Framework :: Plone",
        "License :: OSI Approved :: Zope Public License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Database",
    ],
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"zodb_swiftblobs": ["py.typed", "component.xml"]},
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=[
        "ZODB >= 5.6",
        "ZConfig",
        "zc.lockfile",
        "transaction",
        "zope.interface",
        "python-swiftclient >= 4.0",
        "requests",
        "urllib3",
    ],
    extras_require={
        "devswift": DEVSWIFT,
        "keystone": KEYSTONE,
        "encryption": ENCRYPTION,
        "relstorage": RELSTORAGE,
        "s3": S3,
        "test": DEVSWIFT + KEYSTONE + DEVKEYSTONE + ENCRYPTION + RELSTORAGE + S3 + [
            "pytest >= 7",
            "zope.testing",
            "ZEO",
            "Zope",       # to read zope.conf files with Zope's own schema
            "zodburi",
            "ruff",       # the linter (tests/test_lint.py)
        ],
    },
    entry_points={
        "console_scripts": [
            "zodb-swiftblobs = zodb_swiftblobs.cli:main",
        ],
    },
)
