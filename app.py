"""Melanoma decision support: the entry point only sets up the page and navigates."""

import streamlit as st

st.set_page_config(page_title="Melanoma decision support", page_icon="🩺", layout="wide")
navigation = st.navigation([
    st.Page("pages/diagnose.py", title="Diagnose", icon="🔬", default=True),
    st.Page("pages/compare.py", title="Compare models", icon="📊"),
    st.Page("pages/validate.py", title="Validate on your images", icon="✅"),
    st.Page("pages/model_cards.py", title="Model cards", icon="📄"),
])
navigation.run()
