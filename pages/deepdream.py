import streamlit as st

st.title("deepdream")
st.info("This page is being built.")
