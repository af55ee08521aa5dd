package master

// resizeSteps lists the steps of a resize job (see DESIGN.md, "Resize").
func (m *Master) resizeSteps() []step {
	return nil
}
