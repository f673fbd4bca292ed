import streamlit as st

st.title("adversarial")
st.info("This page is being built.")
