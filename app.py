"""Melanoma decision support: the entry point only sets up the page and navigates."""

import streamlit as st

st.set_page_config(page_title="Melanoma decision support", page_icon="🩺", layout="wide")
navigation = st.navigation([
    st.Page("app_pages/diagnose.py", title="Diagnose", icon="🔬", default=True),
    st.Page("app_pages/compare.py", title="Compare models", icon="📊"),
    st.Page("app_pages/validate.py", title="Validate on your images", icon="✅"),
    st.Page("app_pages/model_cards.py", title="Model cards", icon="📄"),
])
navigation.run()
