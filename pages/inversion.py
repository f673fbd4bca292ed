import streamlit as st

st.title("inversion")
st.info("This page is being built.")
