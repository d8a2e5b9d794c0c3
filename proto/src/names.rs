//! SharePoint Online name and path rules (to be written).
