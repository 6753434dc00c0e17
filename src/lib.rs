pub mod publish;
