"""Trust: signing artifacts and enforcing who may publish what.

* :mod:`sxpm.trust.keys` - Ed25519 key pairs and key ids (``ed25519:<base64>``).
* :mod:`sxpm.trust.payload` - the canonical statement a signature makes.
* :mod:`sxpm.trust.sign` - signing a payload (key or Sigstore keyless).
* :mod:`sxpm.trust.verify` - checking signatures against a requirement.
* :mod:`sxpm.trust.policy` - the trust policy: who may publish which names.
* :mod:`sxpm.trust.enforce` - the candidate signatures of an artifact, stored or remote.

The workflows that fetch, check and sign artifacts are :mod:`sxpm.ops.fetch` and
:mod:`sxpm.ops.sign`.
* :mod:`sxpm.trust.legacy` - ``signature.sig`` of legacy ``.expert`` archives.

Nothing here imports ``sigstore`` at module level: it is heavy, and the CLI must
start fast. Import the submodules you need; this package imports none of them.
"""
