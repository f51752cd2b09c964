"""What each licence the consortium knows obliges a model trained on data under it to do.

One :class:`LicenceTerms` per SPDX id (ids from the SPDX licence list, https://spdx.org/licenses/). Each
obligation is a short reading of the licence, with the section of its legal code it rests on; ``None``
means the licence puts no such obligation on the model. The readings are ours, written for this table;
they are not legal advice.

**How a trained model is read.** A model can memorise and reproduce parts of its training data, so we
read it as an adaptation of that data wherever a licence does not say otherwise in terms:

- Creative Commons 4.0: the model is *Adapted Material* (§1(a) of each licence). Creative Commons itself
  says this depends on the case; we take the reading that asks before shipping.
- ODbL 1.0: the model is a *Derivative Database* (§1; §4.4 share-alike) rather than a *Produced Work*
  (§4.3 notice only; §4.5(b) keeps produced works out of share-alike), since it may hold a substantial
  part of the contents. Internal use within one organisation is not public (§4.5(c)); a consortium is
  several organisations.
- CDLA-Permissive-2.0: §5.4 names machine-learning models as *Results*, and §3.1 frees Results of any
  obligation: nothing carries over.
- CDLA-Sharing-1.0: §3.5 frees *Results*, but §1.11 excludes from Results any output holding more than a
  de minimis portion of the data, which a trained model cannot be shown not to hold; we keep §3's
  share-alike.
- MIT and Apache-2.0 (software licences sometimes put on data): their notices go with the model.
- ``LicenseRef-<name>``: proprietary terms (SPDX licence expressions, annex D of the SPDX specification,
  https://spdx.github.io/spdx-spec/v2.3/SPDX-license-expressions/). They are not interpreted here: the
  model carries them, and releasing it needs them named in its licence.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class LicenceTerms:
    """One licence: its SPDX id, where its legal code is, and the clause behind each obligation it puts on
    a model (None: no such obligation). ``share_alike`` means: the model may only be licensed under this
    same licence, with no further restriction."""

    spdx: str
    name: str
    legal_code: str
    attribution: str | None = None
    share_alike: str | None = None
    non_commercial: str | None = None
    no_derivatives: str | None = None


CC = "https://creativecommons.org/"
_CC_CREDIT = "§3(a): credit the creator, keep the notices, link the licence, mark changes"
_CC_NC = "§1(i), §2(a)(1): only for purposes not mainly aimed at commercial advantage or payment"

_TERMS = (
    LicenceTerms(
        "CC0-1.0", "Creative Commons Zero 1.0 (public domain dedication)",
        CC + "publicdomain/zero/1.0/legalcode",
    ),
    LicenceTerms(
        "CC-BY-4.0", "Creative Commons Attribution 4.0", CC + "licenses/by/4.0/legalcode",
        attribution=_CC_CREDIT,
    ),
    LicenceTerms(
        "CC-BY-SA-4.0", "Creative Commons Attribution-ShareAlike 4.0", CC + "licenses/by-sa/4.0/legalcode",
        attribution=_CC_CREDIT,
        share_alike="§3(b): adapted material only under CC BY-SA 4.0 (or a later or BY-SA compatible "
        "licence), with no added terms that restrict what that licence grants",
    ),
    LicenceTerms(
        "CC-BY-NC-4.0", "Creative Commons Attribution-NonCommercial 4.0", CC + "licenses/by-nc/4.0/legalcode",
        attribution=_CC_CREDIT, non_commercial=_CC_NC,
    ),
    LicenceTerms(
        "CC-BY-NC-SA-4.0", "Creative Commons Attribution-NonCommercial-ShareAlike 4.0",
        CC + "licenses/by-nc-sa/4.0/legalcode",
        attribution=_CC_CREDIT, non_commercial=_CC_NC,
        share_alike="§3(b): adapted material only under CC BY-NC-SA 4.0 (or a later or compatible licence), "
        "with no added terms that restrict what that licence grants",
    ),
    LicenceTerms(
        "CC-BY-ND-4.0", "Creative Commons Attribution-NoDerivatives 4.0", CC + "licenses/by-nd/4.0/legalcode",
        attribution=_CC_CREDIT,
        no_derivatives="§2(a)(1)(B): adapted material may be produced and reproduced, never shared",
    ),
    LicenceTerms(
        "ODbL-1.0", "Open Data Commons Open Database License 1.0",
        "https://opendatacommons.org/licenses/odbl/1-0/",
        attribution="§4.2, §4.3: keep the licence notice, and say which database a produced work comes from",
        share_alike="§4.4: a derivative database used publicly is offered only under the ODbL (or a later or "
        "compatible licence); §4.7, §4.8: no further term or restriction",
    ),
    LicenceTerms(
        "CDLA-Permissive-2.0", "Community Data License Agreement Permissive 2.0",
        "https://cdla.dev/permissive-2-0/",
    ),
    LicenceTerms(
        "CDLA-Sharing-1.0", "Community Data License Agreement Sharing 1.0", "https://cdla.dev/sharing-1-0/",
        attribution="§3.1(c): keep the credit of the data providers (notices, names, links)",
        share_alike="§3.1(a), §3.3: published data, enhanced data included, only under an unmodified "
        "CDLA-Sharing-1.0, with no added restriction (commercial or other)",
    ),
    LicenceTerms(
        "MIT", "MIT License", "https://opensource.org/license/mit",
        attribution="the copyright and permission notices go with every copy or substantial portion",
    ),
    LicenceTerms(
        "Apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0",
        attribution="§4(a)-(d): pass on the licence, mark changed files, keep notices and the NOTICE file",
    ),
)

LICENCES = MappingProxyType({terms.spdx: terms for terms in _TERMS})
"""The known licences by SPDX id."""

LICENCE_REF_PREFIX = "LicenseRef-"
PROPRIETARY_CLAUSE = "proprietary terms, not interpreted here: the model carries them"
