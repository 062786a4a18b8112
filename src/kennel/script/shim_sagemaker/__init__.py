"""Not imported as a package: where the SageMaker Python SDK is not installed, ``kennel run`` puts this folder on
the script's ``PYTHONPATH`` (see :mod:`kennel.script.shims`), so that ``import sagemaker`` finds the placeholder
package here. This file makes the folder part of kennel's package data."""
