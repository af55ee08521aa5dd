package master

// replaceSteps lists the steps of a job that attaches a spare as the new
// replica of a pair after a failover.
func (m *Master) replaceSteps() []step {
	return nil
}
