import streamlit as st

st.title("class_visualization")
st.info("This page is being built.")
