"""What every model card says about use: the words the Model cards page, the PDF and the FHIR
Device show alike (the per-model facts are in each model's card.json)."""

INTENDED_USE = (
    "Second reader for dermoscopic images of pigmented skin lesions, used by clinicians trained in "
    "dermoscopy. It flags lesions that resemble melanomas in its training data; a diagnosis model also "
    "names the most likely of seven diagnoses and flags other skin cancers."
)
LIMITATIONS = (
    "Not a diagnosis and not a medical device. Trained on HAM10000/ISIC 2018 images, mostly of fair "
    "skin from two centres; performance on other skin types, devices, body sites, and on clinical "
    "(non-dermoscopic) photographs is unknown. Probabilities are calibrated on the model's own "
    "validation split; at other clinics they may be off (see the held-out-source results). Never use it "
    "to rule out a lesion a clinician finds suspicious."
)
