pub mod grip;
