"""One case as a FHIR R4 Bundle an EHR can take: the readings, the models behind them, and the report.

An EHR files results as FHIR resources, not as a page. `build_bundle` turns one case (each model's
Decision, the combined reading, the clinician's notes, the PDF case report) into a transaction
Bundle: a preliminary DiagnosticReport whose conclusion says it is a computer-aided assessment,
one Observation per model and one for the combined reading, one Device per model with the key
facts of its card (HL7 AI Transparency on FHIR: the AI is a Device, its output carries the AIAST
security label, and a Provenance names it as author), and a Provenance. A DICOM input's Study
Instance UID links the report to the images in the PACS.

fhir.resources ships FHIR R4B (4.3.0) as its R4-line models (there is no separate R4 package);
the Bundle is validated by constructing it with them, and only elements that R4 (4.0.1) and R4B
share are used. The clinician's notes travel in R5's DiagnosticReport.note through HL7's
cross-version extension, as R4 has no such element.

Plain values in, JSON out: no Streamlit, nothing written to disk. Patient identity from a DICOM
file enters the Bundle only when the caller asks (`identify_patient`).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle

from melanoma import __version__
from melanoma.card import ModelCard
from melanoma.cards import INTENDED_USE, LIMITATIONS
from melanoma.cases import Decision
from melanoma.combined import CombinedReading
from melanoma.diagnoses import MALIGNANT, NAMES
from melanoma.images import file_stem, valid_uid

if TYPE_CHECKING:
    from melanoma.dicom import DicomInfo

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
AI_DEVICE_TYPE = "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS"  # AI Transparency IG (ballot)
DICOM_UID = "urn:dicom:uid"  # identifier system for DICOM UIDs, values "urn:oid:<uid>"
URI = "urn:ietf:rfc:3986"  # identifier system whose values are URIs
NOTE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
# This tool's own codes, for what no public code system names (a calibrated model probability, the gate).
LOCAL_CODES = "urn:melanoma-decision-support:codes"
ISIC_DIAGNOSES = "urn:melanoma-decision-support:isic-2018-diagnosis"  # MEL, NV, BCC, AKIEC, BKL, DF, VASC

# SNOMED CT concepts (International Edition).
DERMOSCOPY = ("1237125003", "Optical dermatoscopy of skin")  # the report's code (procedure)
MELANOMA = ("372244006", "Malignant melanoma")  # disorder
BASAL_CELL_CARCINOMA = ("254701007", "Basal cell carcinoma of skin")  # disorder
DIAGNOSIS_SNOMED = {"MEL": MELANOMA, "BCC": BASAL_CELL_CARCINOMA}  # the ISIC diagnoses with one SNOMED CT concept
SNOMED_SCHEMES = ("SCT",)  # DICOM's coding scheme designator for SNOMED CT concept ids ("SRT" ids are not)
AI_ASSERTED = {"system": OBSERVATION_VALUE, "code": "AIAST", "display": "Artificial Intelligence asserted"}

CONCLUSION = "Computer-aided assessment, not a diagnosis."
REPORT_TEXT = "Computer-aided melanoma assessment of a dermoscopic image"
REPORT_FORM_TITLE = "Case report (PDF)"
PERCENT_DECIMALS = 4  # a probability to 1e-6: finer digits would claim a precision calibration does not have
THRESHOLD_TEXT = "Operating threshold, chosen on the validation split: at or above it, the lesion is flagged."
ASSESSED_TEXT = "Looks like a dermoscopic image of a skin lesion"
COMBINED_NOT_ASSESSED = "At least one model finds this image unlike the dermoscopic images it was trained on"


@dataclass(frozen=True)
class ModelFacts:
    """What an EHR should know about one model (its Device): identity and the key facts of its card."""

    name: str
    version: str
    sha256: str  # of the weights file
    architecture: str = ""
    training_data: str = ""
    test_roc_auc: float | None = None
    intended_use: str = ""
    limitations: str = ""

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256.lower()):
            raise ValueError(
                f"sha256 must be the weights file's 64-digit hexadecimal SHA-256 (card.json's 'sha256'); "
                f"received {self.sha256!r}."
            )

    @classmethod
    def from_card(
        cls, card: ModelCard, metrics: dict, intended_use: str = INTENDED_USE, limitations: str = LIMITATIONS
    ) -> ModelFacts:
        """The facts of an installed model's card and metrics.json (InstalledModel.card, .metrics)."""
        data = card.training.data
        splits = "; ".join(
            f"{split}: " + ", ".join(f"{count:,} {label}" for label, count in counts.items())
            for split, counts in data.get("split_counts", {}).items()
        )
        training = f"{data.get('layout', 'unknown')} layout, split by {data.get('grouped_by', 'image')}; {splits}"
        return cls(
            card.name,
            card.version_text,
            card.sha256,
            card.network.architecture,
            training,
            metrics.get("roc_auc"),
            intended_use,
            limitations,
        )

    def card_text(self) -> str:
        """The model card's key facts as Device.note text."""
        auc = None if self.test_roc_auc is None else f"{self.test_roc_auc:.3f}"
        facts = [
            ("Architecture", self.architecture),
            ("Training data", self.training_data),
            ("Test ROC AUC", auc),
            ("Intended use", self.intended_use),
            ("Limitations", self.limitations),
            ("Weights sha256", self.sha256),
        ]
        return "\n".join(
            [f"Model card: {self.name} ({self.version})"] + [f"{key}: {value}" for key, value in facts if value]
        )


@dataclass(frozen=True)
class BodySite:
    """Where the lesion is: words, and a SNOMED CT body structure when one is known."""

    text: str
    snomed: tuple[str, str] | None = None  # (concept id, display), e.g. ("40983000", "Upper arm")

    @classmethod
    def from_dicom(cls, info: DicomInfo) -> BodySite | None:
        """The site a DICOM photograph names (AnatomicRegionSequence, else BodyPartExamined), if any."""
        if not info.body_site:
            return None
        region = info.anatomic_region
        coded = region and region.scheme in SNOMED_SCHEMES
        return cls(info.body_site, (region.value, region.meaning) if coded else None)


@dataclass(frozen=True)
class FhirCase:
    """One case in plain values: the page's or the CLI's readings, nothing from Streamlit."""

    readings: tuple[tuple[Decision, ModelFacts], ...]  # each model's decision with its model's facts
    created: datetime  # with its time zone
    report_pdf: bytes | None = None  # melanoma.report.case_report_pdf's output; the CLI has none
    notes: str = ""  # the clinician's notes
    combined: CombinedReading | None = None
    dicom: DicomInfo | None = None  # DecodedImage.dicom when the image came as DICOM
    body_site: BodySite | None = None  # the clinician's; else the DICOM file's

    def __post_init__(self) -> None:
        if not self.readings:
            raise ValueError("A FHIR case needs at least one model reading; received none. Score the image first.")
        for decision, facts in self.readings:
            if decision.model != facts.name:
                raise ValueError(
                    f"Each decision must come with its own model's facts; received the decision of "
                    f"{decision.model!r} with the facts of {facts.name!r}."
                )
        if self.created.utcoffset() is None:
            raise ValueError(
                f"The case time must carry its time zone; received the naive time {self.created}. "
                "Pass datetime.now().astimezone()."
            )
        if self.report_pdf is not None and not self.report_pdf.startswith(b"%PDF-"):
            raise ValueError(f"report_pdf must be PDF bytes (starting with %PDF-); received {self.report_pdf[:8]!r}.")


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _percent(probability: float) -> dict:
    return {"value": round(100 * probability, PERCENT_DECIMALS), "unit": "%", "system": UCUM, "code": "%"}


def _reading(probability: float, threshold: float | None) -> dict:
    """A probability against its threshold: value, the threshold as reference range, the verdict as
    interpretation (High: flagged). Fits an Observation and an Observation.component alike."""
    values: dict = {"valueQuantity": _percent(probability)}
    if threshold is not None:
        flagged = probability >= threshold
        verdict = (
            ("H", "High", "Suspicious: at or above the operating threshold")
            if flagged
            else ("N", "Normal", "Not flagged: below the operating threshold")
        )
        values["interpretation"] = [_concept(INTERPRETATION, *verdict)]
        values["referenceRange"] = [{"high": _percent(threshold), "text": THRESHOLD_TEXT}]
    return values


def _gate(in_distribution: bool, reason: str) -> dict:
    """The out-of-distribution gate's result as a component."""
    code = "in-distribution" if in_distribution else "out-of-distribution"
    return {
        "code": _concept(LOCAL_CODES, "ood-gate", "Out-of-distribution gate"),
        "valueCodeableConcept": _concept(
            LOCAL_CODES, code, code.replace("-", " ").capitalize(), ASSESSED_TEXT if in_distribution else reason
        ),
    }


def _not_assessed(reason: str) -> dict:
    return {
        "dataAbsentReason": _concept(DATA_ABSENT_REASON, "not-performed", "Not Performed", f"Not assessed: {reason}")
    }


def _diagnosis_code(code: str) -> dict:
    codings = [{"system": ISIC_DIAGNOSES, "code": code, "display": NAMES[code]}]
    if code in DIAGNOSIS_SNOMED:
        codings.append({"system": SNOMED, "code": DIAGNOSIS_SNOMED[code][0], "display": DIAGNOSIS_SNOMED[code][1]})
    return {"coding": codings, "text": f"Probability of {NAMES[code]}"}


def _diagnosis_components(reading) -> list[dict]:
    """A diagnosis reading's components (a Decision's, or the combined reading's averaged
    differential): P(skin cancer) against its threshold, then each diagnosis' probability."""
    if reading.malignant_probability is None:
        return []
    cancers = ", ".join(NAMES[code] for code in MALIGNANT)
    skin_cancer = {
        "code": _concept(
            LOCAL_CODES, "skin-cancer-probability", f"Calibrated probability of a skin cancer ({cancers})"
        ),
        **_reading(reading.malignant_probability, reading.malignant_threshold),
    }
    return [skin_cancer] + [
        {"code": _diagnosis_code(code), "valueQuantity": _percent(probability)}
        for code, probability in reading.differential
    ]


def _reference(url: str, display: str) -> dict:
    return {"reference": url, "display": display}


def _study_reference(info: DicomInfo | None) -> dict | None:
    """A logical reference to the DICOM study: the EHR resolves it by Study Instance UID. None
    without a well-formed one: an empty UID made "urn:oid:", which identifies nothing."""
    uid = valid_uid(info.study_instance_uid) if info else ""
    if not uid:
        return None
    return {
        "type": "ImagingStudy",
        "identifier": {"system": DICOM_UID, "value": f"urn:oid:{uid}"},
        "display": f"DICOM study {uid}",
    }


def _subject(case: FhirCase) -> dict:
    """The patient as the DICOM file identifies them, for an EHR to match."""
    if case.dicom is None or not case.dicom.identity.patient_id:
        raise ValueError(
            "identify_patient=True needs a DICOM image that carries a Patient ID; this case has none. "
            "Leave identify_patient off and attach the Bundle to the patient in the EHR."
        )
    identity = case.dicom.identity
    identifier: dict = {"value": identity.patient_id}
    if identity.issuer:
        identifier["assigner"] = {"display": identity.issuer}
    return {"type": "Patient", "identifier": identifier, "display": identity.patient_name or identity.patient_id}


class _Builder:
    """Assigns each resource its urn:uuid and collects the Bundle's entries."""

    def __init__(self, case: FhirCase, subject: dict | None) -> None:
        self.case, self.subject, self.entries = case, subject, []
        self.time = case.created.isoformat(timespec="seconds")

    def add(self, resource: dict, if_none_exist: str | None = None) -> str:
        url = f"urn:uuid:{uuid.uuid4()}"
        request = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist:
            request["ifNoneExist"] = if_none_exist
        self.entries.append({"fullUrl": url, "resource": resource, "request": request})
        return url

    def observation(self, code: dict, fields: dict) -> str:
        resource = {
            "resourceType": "Observation",
            "meta": {"security": [AI_ASSERTED]},
            "status": "preliminary",
            "category": [_concept(OBSERVATION_CATEGORY, "imaging", "Imaging")],
            "code": code,
            "effectiveDateTime": self.time,
            "issued": self.time,
            **fields,
        }
        if self.subject:
            resource["subject"] = self.subject
        site = self.case.body_site or (BodySite.from_dicom(self.case.dicom) if self.case.dicom else None)
        if site:
            resource["bodySite"] = (
                _concept(SNOMED, *site.snomed, text=site.text) if site.snomed else {"text": site.text}
            )
        return self.add(resource)

    def device(self, facts: ModelFacts) -> str:
        digest = base64.urlsafe_b64encode(bytes.fromhex(facts.sha256)).rstrip(b"=").decode()
        name = f"ni:///sha-256;{digest}"  # RFC 6920: the weights' hash names the model
        identifier = {"system": URI, "value": name}
        resource = {
            "resourceType": "Device",
            "identifier": [identifier],
            "status": "active",
            "type": _concept(
                AI_DEVICE_TYPE,
                "Artificial-Intelligence",
                "All kinds of Artificial Intelligence",
                "AI model: melanoma classifier for dermoscopic images",
            ),
            "deviceName": [{"name": facts.name, "type": "model-name"}],
            "version": [
                {"type": {"text": "model version"}, "value": facts.version},
                {"type": {"text": "weights sha256"}, "value": facts.sha256},
                {"type": {"text": "software"}, "value": f"melanoma-decision-support {__version__}"},
            ],
            "note": [{"text": facts.card_text()}],
        }
        if facts.test_roc_auc is not None:
            resource["property"] = [
                {"type": {"text": "test ROC AUC"}, "valueQuantity": [{"value": facts.test_roc_auc}]}
            ]
        return self.add(resource, if_none_exist=f"identifier={quote(f'{URI}|{name}', safe='')}")  # one per model

    def model_observation(self, decision: Decision, facts: ModelFacts, device: str) -> str:
        fields: dict = {
            "device": _reference(device, facts.name),
            "component": [_gate(decision.in_distribution, decision.ood_reason)],
        }
        if not decision.assessed:
            return self.observation(self._melanoma_code(facts.name), {**fields, **_not_assessed(decision.ood_reason)})
        fields.update(_reading(decision.probability, decision.threshold))
        fields["component"] += _diagnosis_components(decision)
        return self.observation(self._melanoma_code(facts.name), fields)

    @staticmethod
    def _melanoma_code(model: str) -> dict:
        return _concept(
            LOCAL_CODES,
            "melanoma-probability",
            "Calibrated melanoma probability (computer-aided)",
            f"Calibrated melanoma probability from {model} (computer-aided, not a diagnosis)",
        )

    def combined_observation(self, combined: CombinedReading, members: dict[str, str]) -> str:
        name = combined.combination.name
        method = f"{name[0].upper()}{name[1:]}, melanoma: {', '.join(combined.members)}"
        if combined.averaged:
            averaged = ", ".join(combined.averaged_members)
            method += f"; differential: mean of the calibrated diagnosis probabilities of {averaged}"
        fields: dict = {
            "method": {"text": method},
            "derivedFrom": [_reference(members[name], name) for name in combined.models if name in members],
            "component": [
                _gate(combined.assessed, COMBINED_NOT_ASSESSED),
                {
                    "code": _concept(LOCAL_CODES, "models-disagree", "The models' verdicts disagree"),
                    "valueBoolean": combined.disagreement,
                },
            ],
        }
        if combined.assessed:
            fields.update(_reading(combined.probability, combined.threshold))
            fields["component"] += _diagnosis_components(combined)
        else:
            fields.update(_not_assessed(COMBINED_NOT_ASSESSED))
        code = _concept(
            LOCAL_CODES,
            "combined-melanoma-probability",
            "Combined calibrated melanoma probability",
            "Combined reading: calibrated melanoma probability averaged over several models "
            "(computer-aided, not a diagnosis)",
        )
        return self.observation(code, fields)

    def diagnostic_report(self, results: list[str]) -> str:
        case = self.case
        summaries = ([case.combined.summary()] if case.combined else []) + [
            " ".join(line for line in (d.summary(), d.scope_note(alone=case.combined is None)) if line)
            for d, _ in case.readings
        ]
        resource = {
            "resourceType": "DiagnosticReport",
            "meta": {"security": [AI_ASSERTED]},
            "status": "preliminary",
            "code": _concept(SNOMED, *DERMOSCOPY, text=REPORT_TEXT),
            "effectiveDateTime": self.time,
            "issued": self.time,
            "result": [{"reference": url} for url in results],
            "conclusion": " ".join([CONCLUSION, *summaries]),
        }
        if self.subject:
            resource["subject"] = self.subject
        if study := _study_reference(case.dicom):
            resource["imagingStudy"] = [study]
        if case.notes.strip():
            note = {"text": case.notes, "time": self.time}
            resource["extension"] = [{"url": NOTE_EXTENSION, "valueAnnotation": note}]
        if case.report_pdf is not None:
            resource["presentedForm"] = [
                {
                    "contentType": "application/pdf",
                    "title": REPORT_FORM_TITLE,
                    "creation": self.time,
                    "data": base64.b64encode(case.report_pdf).decode(),
                    "size": len(case.report_pdf),
                    "hash": base64.b64encode(hashlib.sha1(case.report_pdf).digest()).decode(),
                }
            ]  # FHIR's Attachment.hash
        return self.add(resource)

    def provenance(self, targets: list[str], devices: dict[str, str]) -> None:
        resource = {
            "resourceType": "Provenance",
            "target": [{"reference": url} for url in targets],
            "occurredDateTime": self.time,
            "recorded": self.time,
            "reason": [{"coding": [AI_ASSERTED]}],
            "activity": _concept(DATA_OPERATION, "CREATE", "create"),
            "agent": [
                {
                    "type": _concept(PARTICIPANT_TYPE, "author", "Author"),
                    "role": [
                        _concept(AI_DEVICE_TYPE, "Artificial-Intelligence", "All kinds of Artificial Intelligence")
                    ],
                    "who": _reference(url, name),
                }
                for name, url in devices.items()
            ],
        }
        if study := _study_reference(self.case.dicom):
            resource["entity"] = [{"role": "source", "what": study}]
        self.add(resource)


def build_bundle(case: FhirCase, identify_patient: bool = False) -> Bundle:
    """The case as a FHIR R4 transaction Bundle, validated by fhir.resources' R4B models.

    `identify_patient` puts the DICOM file's Patient ID and name in the subject, for an EHR to file
    the report; off by default, nothing from the file names anyone (the attached PDF names a DICOM
    image by its UID; the clinician's notes are as they wrote them).
    """
    builder = _Builder(case, _subject(case) if identify_patient else None)
    devices = {facts.name: builder.device(facts) for _, facts in case.readings}
    members = {
        decision.model: builder.model_observation(decision, facts, devices[facts.name])
        for decision, facts in case.readings
    }
    results = ([builder.combined_observation(case.combined, members)] if case.combined else []) + list(members.values())
    report = builder.diagnostic_report(results)
    builder.provenance([report, *results], devices)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": builder.time,
        "identifier": {"system": URI, "value": f"urn:uuid:{uuid.uuid4()}"},
        "entry": builder.entries,
    }
    return Bundle.model_validate(bundle)


def bundle_json(case: FhirCase, identify_patient: bool = False) -> str:
    """`build_bundle` as JSON text, for a download button or a file."""
    return build_bundle(case, identify_patient).model_dump_json(indent=2)


def bundle_file_name(image_name: str, dicom: DicomInfo | None = None) -> str:
    """A file name for the case's Bundle, after the image (melanoma.dicom.file_stem)."""
    return f"{file_stem(image_name, dicom)}.fhir.json"
