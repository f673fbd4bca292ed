import streamlit as st

st.title("patches")
st.info("This page is being built.")
