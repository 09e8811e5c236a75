! qrmid_qrmi: a Fortran 2008 module over QRMI's C API (qrmi.h) as libqrmid-qrmi implements it on the qrmid daemon.
!
!   use qrmid_qrmi
!   type(qrmi_resource) :: qpu
!   call qpu%open(qrmi_job_resource(1), ierr, msg)           ! the job's first resource (the Slurm plugin's --qpu)
!   call qpu%start_primitive('sampler', input_json, task, ierr, msg)
!   call qpu%wait(task, state, ierr, msg)                    ! polls qrmi_resource_task_status
!   if (state == QRMI_TASK_STATUS_COMPLETED) call qpu%result(task, text, ierr, msg)
!   call qpu%stop(task, ierr, msg)
!   call qpu%close()
!
! Every procedure returns a QRMI return code in `status` (QRMI_RETURN_CODE_SUCCESS is 0) and, when given the optional
! `message` and the call failed, what went wrong (qrmi_get_last_error's text). Strings come back as
! `character(len=:), allocatable`; the C strings behind them are freed with qrmi_string_free. The daemon's address,
! authentication and the job's lease come from the environment, as for any program linked with libqrmid-qrmi.
module qrmid_qrmi
  use, intrinsic :: iso_c_binding, only: c_bool, c_char, c_f_pointer, c_int, c_int32_t, c_loc, c_null_char, &
                                         c_null_ptr, c_ptr, c_size_t, c_associated
  implicit none
  private

  ! QrmiReturnCode
  integer(c_int), parameter, public :: QRMI_RETURN_CODE_SUCCESS = 0, QRMI_RETURN_CODE_ERROR = 100, &
    QRMI_RETURN_CODE_NULL_POINTER_ERROR = 101, QRMI_RETURN_CODE_ENV_VAR_NOT_SET_ERROR = 102, &
    QRMI_RETURN_CODE_PARSE_ERROR = 103, QRMI_RETURN_CODE_UNSUPPORTED_RESOURCE_TYPE_ERROR = 104, &
    QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR = 105, QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR = 106, &
    QRMI_RETURN_CODE_TASK_NOT_READY_ERROR = 107, QRMI_RETURN_CODE_MISSING_CONFIG_KEY_ERROR = 108, &
    QRMI_RETURN_CODE_INVALID_INPUT_ERROR = 109, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR = 111, &
    QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR = 112, QRMI_RETURN_CODE_AUTHENTICATION_FAILED_ERROR = 113, &
    QRMI_RETURN_CODE_INVALID_CONFIG_ERROR = 114

  ! QrmiTaskStatus
  integer(c_int), parameter, public :: QRMI_TASK_STATUS_QUEUED = 0, QRMI_TASK_STATUS_RUNNING = 1, &
    QRMI_TASK_STATUS_COMPLETED = 2, QRMI_TASK_STATUS_FAILED = 3, QRMI_TASK_STATUS_CANCELLED = 4

  ! QrmiResourceType
  integer(c_int), parameter, public :: QRMI_RESOURCE_TYPE_IBM_QUANTUM_SYSTEM = 0, &
    QRMI_RESOURCE_TYPE_QISKIT_RUNTIME_SERVICE = 1, QRMI_RESOURCE_TYPE_IBM_QUANTUM_COMPUTE_SERVICE = 2, &
    QRMI_RESOURCE_TYPE_PASQAL_CLOUD = 3, QRMI_RESOURCE_TYPE_PASQAL_LOCAL = 4, QRMI_RESOURCE_TYPE_ALICE_BOB_FELIS = 5, &
    QRMI_RESOURCE_TYPE_IQM_SERVER = 6, QRMI_RESOURCE_TYPE_OQTOPUS = 7, QRMI_RESOURCE_TYPE_LOCAL_QISKIT = 100, &
    QRMI_RESOURCE_TYPE_LOCAL_PULSER = 101
  integer(c_int), parameter :: RESOURCE_TYPES(*) = [QRMI_RESOURCE_TYPE_IBM_QUANTUM_SYSTEM, &
    QRMI_RESOURCE_TYPE_QISKIT_RUNTIME_SERVICE, QRMI_RESOURCE_TYPE_IBM_QUANTUM_COMPUTE_SERVICE, &
    QRMI_RESOURCE_TYPE_PASQAL_CLOUD, QRMI_RESOURCE_TYPE_PASQAL_LOCAL, QRMI_RESOURCE_TYPE_ALICE_BOB_FELIS, &
    QRMI_RESOURCE_TYPE_IQM_SERVER, QRMI_RESOURCE_TYPE_OQTOPUS, QRMI_RESOURCE_TYPE_LOCAL_QISKIT, &
    QRMI_RESOURCE_TYPE_LOCAL_PULSER]

  ! QrmiPayload_Tag
  integer(c_int), parameter, public :: QRMI_PAYLOAD_QISKIT_PRIMITIVE = 0, QRMI_PAYLOAD_PASQAL_CLOUD = 1

  ! QrmiPayload (a tag, then a union of one body per payload kind) as the two kinds this module starts fill it: the
  ! tag, the body's fields, then `spare` room up to 128 bytes of union, more than any body of qrmi.h needs (its
  ! largest is 64), so the library never reads past the object. tests/test_qrmi_fortran_mpi.py compares the layout
  ! with the header's.
  type, bind(c), public :: qrmi_qiskit_primitive_payload
    integer(c_int) :: tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE
    type(c_ptr) :: input = c_null_ptr
    type(c_ptr) :: program_id = c_null_ptr
    type(c_ptr) :: spare(14) = c_null_ptr
  end type qrmi_qiskit_primitive_payload

  type, bind(c), public :: qrmi_pasqal_cloud_payload
    integer(c_int) :: tag = QRMI_PAYLOAD_PASQAL_CLOUD
    type(c_ptr) :: sequence = c_null_ptr
    integer(c_int32_t) :: job_runs = 0
    integer(c_int) :: spare_int = 0
    type(c_ptr) :: spare(14) = c_null_ptr
  end type qrmi_pasqal_cloud_payload

  !> A QrmiQuantumResource handle and the resource's name.
  type, public :: qrmi_resource
    type(c_ptr), private :: handle = c_null_ptr
    character(len=:), allocatable :: name
  contains
    procedure :: open => resource_open
    procedure :: is_open => resource_is_open
    procedure :: is_accessible => resource_is_accessible
    procedure :: acquire => resource_acquire
    procedure :: release => resource_release
    procedure :: start_primitive => resource_start_primitive
    procedure :: start_pulser => resource_start_pulser
    procedure :: task_status => resource_task_status
    procedure :: wait => resource_wait
    procedure :: result => resource_result
    procedure :: logs => resource_logs
    procedure :: stop => resource_stop
    procedure :: close => resource_close
    final :: resource_final
  end type qrmi_resource

  public :: qrmi_job_resource, qrmi_job_resource_count, qrmi_resource_type_of, qrmi_task_status_name

  interface
    function c_qrmi_resource_new(resource_id, resource_type) bind(c, name='qrmi_resource_new')
      import :: c_char, c_int, c_ptr
      character(kind=c_char), intent(in) :: resource_id(*)
      integer(c_int), value :: resource_type
      type(c_ptr) :: c_qrmi_resource_new
    end function c_qrmi_resource_new

    function c_qrmi_resource_free(qrmi) bind(c, name='qrmi_resource_free')
      import :: c_int, c_ptr
      type(c_ptr), value :: qrmi
      integer(c_int) :: c_qrmi_resource_free
    end function c_qrmi_resource_free

    function c_qrmi_resource_is_accessible(qrmi, outp) bind(c, name='qrmi_resource_is_accessible')
      import :: c_bool, c_int, c_ptr
      type(c_ptr), value :: qrmi
      logical(c_bool), intent(out) :: outp
      integer(c_int) :: c_qrmi_resource_is_accessible
    end function c_qrmi_resource_is_accessible

    function c_qrmi_resource_acquire(qrmi, acquisition_token) bind(c, name='qrmi_resource_acquire')
      import :: c_int, c_ptr
      type(c_ptr), value :: qrmi
      type(c_ptr), intent(out) :: acquisition_token
      integer(c_int) :: c_qrmi_resource_acquire
    end function c_qrmi_resource_acquire

    function c_qrmi_resource_release(qrmi, acquisition_token) bind(c, name='qrmi_resource_release')
      import :: c_char, c_int, c_ptr
      type(c_ptr), value :: qrmi
      character(kind=c_char), intent(in) :: acquisition_token(*)
      integer(c_int) :: c_qrmi_resource_release
    end function c_qrmi_resource_release

    function c_qrmi_resource_task_start(qrmi, payload, task_id) bind(c, name='qrmi_resource_task_start')
      import :: c_int, c_ptr
      type(c_ptr), value :: qrmi, payload
      type(c_ptr), intent(out) :: task_id
      integer(c_int) :: c_qrmi_resource_task_start
    end function c_qrmi_resource_task_start

    function c_qrmi_resource_task_status(qrmi, task_id, status) bind(c, name='qrmi_resource_task_status')
      import :: c_char, c_int, c_ptr
      type(c_ptr), value :: qrmi
      character(kind=c_char), intent(in) :: task_id(*)
      integer(c_int), intent(out) :: status
      integer(c_int) :: c_qrmi_resource_task_status
    end function c_qrmi_resource_task_status

    function c_qrmi_resource_task_stop(qrmi, task_id) bind(c, name='qrmi_resource_task_stop')
      import :: c_char, c_int, c_ptr
      type(c_ptr), value :: qrmi
      character(kind=c_char), intent(in) :: task_id(*)
      integer(c_int) :: c_qrmi_resource_task_stop
    end function c_qrmi_resource_task_stop

    function c_qrmi_string_free(ptr) bind(c, name='qrmi_string_free')
      import :: c_int, c_ptr
      type(c_ptr), value :: ptr
      integer(c_int) :: c_qrmi_string_free
    end function c_qrmi_string_free

    function c_qrmi_get_last_error() bind(c, name='qrmi_get_last_error')
      import :: c_ptr
      type(c_ptr) :: c_qrmi_get_last_error
    end function c_qrmi_get_last_error

    function c_qrmi_get_last_error_kind() bind(c, name='qrmi_get_last_error_kind')
      import :: c_int
      integer(c_int) :: c_qrmi_get_last_error_kind
    end function c_qrmi_get_last_error_kind

    function c_qrmi_config_resource_type_to_str(resource_type) bind(c, name='qrmi_config_resource_type_to_str')
      import :: c_int, c_ptr
      integer(c_int), value :: resource_type
      type(c_ptr) :: c_qrmi_config_resource_type_to_str
    end function c_qrmi_config_resource_type_to_str

    function c_strlen(s) bind(c, name='strlen')
      import :: c_ptr, c_size_t
      type(c_ptr), value :: s
      integer(c_size_t) :: c_strlen
    end function c_strlen

    function c_usleep(microseconds) bind(c, name='usleep')
      import :: c_int
      integer(c_int), value :: microseconds
      integer(c_int) :: c_usleep
    end function c_usleep
  end interface

  ! qrmi_resource_task_result and qrmi_resource_task_logs share one signature.
  abstract interface
    function c_qrmi_resource_task_text(qrmi, task_id, outp) bind(c)
      import :: c_char, c_int, c_ptr
      type(c_ptr), value :: qrmi
      character(kind=c_char), intent(in) :: task_id(*)
      type(c_ptr), intent(out) :: outp
      integer(c_int) :: c_qrmi_resource_task_text
    end function c_qrmi_resource_task_text
  end interface
  procedure(c_qrmi_resource_task_text), bind(c, name='qrmi_resource_task_result') :: c_qrmi_resource_task_result
  procedure(c_qrmi_resource_task_text), bind(c, name='qrmi_resource_task_logs') :: c_qrmi_resource_task_logs

contains

  ! Each public procedure hands its optional `message` only the text an internal one wrote into `why`: gfortran
  ! loses an optional deferred-length string passed on from one procedure to the next.

  !> Opens resource `name` (e.g. qrmi_job_resource(1)) with the job's type for it (QRMI_JOB_QPU_TYPES), or
  !> `resource_type` (a QRMI_RESOURCE_TYPE_* value) when given.
  subroutine resource_open(self, name, status, message, resource_type)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: name
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    integer, intent(in), optional :: resource_type
    character(len=:), allocatable :: why
    integer(c_int) :: kind

    call self%close()
    kind = int(qrmi_resource_type_of(name), c_int)
    if (present(resource_type)) kind = int(resource_type, c_int)
    if (len_trim(name) == 0) then
      status = QRMI_RETURN_CODE_ENV_VAR_NOT_SET_ERROR
      why = 'no resource name: pass one, or run in a job started with --qpu'
    else if (kind < 0) then
      status = QRMI_RETURN_CODE_UNSUPPORTED_RESOURCE_TYPE_ERROR
      why = 'the job has no resource type for ' // trim(name) // &
        ' (QRMI_JOB_QPU_RESOURCES, QRMI_JOB_QPU_TYPES): pass resource_type'
    else
      self%handle = c_qrmi_resource_new(c_string(trim(name)), kind)
      status = QRMI_RETURN_CODE_SUCCESS
      if (c_associated(self%handle)) then
        self%name = trim(name)
      else
        status = c_qrmi_get_last_error_kind()
        if (status == QRMI_RETURN_CODE_SUCCESS) status = QRMI_RETURN_CODE_ERROR
      end if
      why = last_error(status)
    end if
    if (present(message)) message = why
  end subroutine resource_open

  logical function resource_is_open(self)
    class(qrmi_resource), intent(in) :: self
    resource_is_open = c_associated(self%handle)
  end function resource_is_open

  !> Whether the daemon has the resource and it is online.
  subroutine resource_is_accessible(self, accessible, status, message)
    class(qrmi_resource), intent(inout) :: self
    logical, intent(out) :: accessible
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why
    logical(c_bool) :: c_accessible

    accessible = .false.
    if (opened(self, status, why)) then
      status = c_qrmi_resource_is_accessible(self%handle, c_accessible)
      why = last_error(status)
      accessible = status == QRMI_RETURN_CODE_SUCCESS .and. logical(c_accessible)
    end if
    if (present(message)) message = why
  end subroutine resource_is_accessible

  !> Takes a lease on the resource (bound to the job, $QRMI_JOB_ID, when set): the handle's later tasks run under it
  !> until it is released. Not needed in a job started with --qpu, which has the Slurm plugin's lease.
  subroutine resource_acquire(self, token, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=:), allocatable, intent(out) :: token
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why
    type(c_ptr) :: out

    token = ''
    if (opened(self, status, why)) then
      out = c_null_ptr
      status = c_qrmi_resource_acquire(self%handle, out)
      why = last_error(status)
      if (status == QRMI_RETURN_CODE_SUCCESS) token = owned_string(out)
    end if
    if (present(message)) message = why
  end subroutine resource_acquire

  !> Ends the lease with this token; the daemon may cancel its unfinished tasks (its [leases] settings).
  subroutine resource_release(self, token, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: token
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why

    if (opened(self, status, why)) then
      status = c_qrmi_resource_release(self%handle, c_string(token))
      why = last_error(status)
    end if
    if (present(message)) message = why
  end subroutine resource_release

  !> Starts a Qiskit primitive task: `program_id` 'sampler' or 'estimator', `input` the primitive's input as JSON.
  subroutine resource_start_primitive(self, program_id, input, task_id, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: program_id, input
    character(len=:), allocatable, intent(out) :: task_id
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    type(qrmi_qiskit_primitive_payload), target :: payload
    character(kind=c_char), allocatable, target :: input_c(:), program_c(:)
    character(len=:), allocatable :: why

    call to_c_chars(input, input_c)
    call to_c_chars(program_id, program_c)
    payload%input = c_loc(input_c)
    payload%program_id = c_loc(program_c)
    call start(self, c_loc(payload), task_id, status, why)
    if (present(message)) message = why
  end subroutine resource_start_primitive

  !> Starts a Pulser task: `sequence` the sequence's abstract representation (JSON), run `job_runs` times.
  subroutine resource_start_pulser(self, sequence, job_runs, task_id, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: sequence
    integer, intent(in) :: job_runs
    character(len=:), allocatable, intent(out) :: task_id
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    type(qrmi_pasqal_cloud_payload), target :: payload
    character(kind=c_char), allocatable, target :: sequence_c(:)
    character(len=:), allocatable :: why

    call to_c_chars(sequence, sequence_c)
    payload%sequence = c_loc(sequence_c)
    payload%job_runs = int(job_runs, c_int32_t)
    call start(self, c_loc(payload), task_id, status, why)
    if (present(message)) message = why
  end subroutine resource_start_pulser

  subroutine start(self, payload, task_id, status, why)
    class(qrmi_resource), intent(inout) :: self
    type(c_ptr), intent(in) :: payload
    character(len=:), allocatable, intent(out) :: task_id, why
    integer, intent(out) :: status
    type(c_ptr) :: id

    task_id = ''
    if (.not. opened(self, status, why)) return
    id = c_null_ptr
    status = c_qrmi_resource_task_start(self%handle, payload, id)
    why = last_error(status)
    if (status == QRMI_RETURN_CODE_SUCCESS) task_id = owned_string(id)
  end subroutine start

  !> The task's state now (one of the QRMI_TASK_STATUS_* values).
  subroutine resource_task_status(self, task_id, state, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: task_id
    integer, intent(out) :: state
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why

    call poll(self, task_id, state, status, why)
    if (present(message)) message = why
  end subroutine resource_task_status

  subroutine poll(self, task_id, state, status, why)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: task_id
    integer, intent(out) :: state, status
    character(len=:), allocatable, intent(out) :: why
    integer(c_int) :: c_state

    state = -1
    if (.not. opened(self, status, why)) return
    status = c_qrmi_resource_task_status(self%handle, c_string(task_id), c_state)
    why = last_error(status)
    if (status == QRMI_RETURN_CODE_SUCCESS) state = c_state
  end subroutine poll

  !> Polls the task's status every `poll_seconds` (default 0.5) until it is completed, failed or cancelled; `state`
  !> is that final state. With `timeout_seconds`, gives up after that long with QRMI_RETURN_CODE_TASK_NOT_READY_ERROR
  !> and the last state seen.
  subroutine resource_wait(self, task_id, state, status, message, poll_seconds, timeout_seconds)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: task_id
    integer, intent(out) :: state
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    real, intent(in), optional :: poll_seconds, timeout_seconds
    character(len=:), allocatable :: why
    integer(c_int) :: pause_us, ignored
    real :: waited

    pause_us = 500000
    if (present(poll_seconds)) pause_us = int(max(poll_seconds, 0.001) * 1.0e6, c_int)
    waited = 0.0
    do
      call poll(self, task_id, state, status, why)
      if (status /= QRMI_RETURN_CODE_SUCCESS) exit
      if (state /= QRMI_TASK_STATUS_QUEUED .and. state /= QRMI_TASK_STATUS_RUNNING) exit
      if (present(timeout_seconds)) then
        if (waited >= timeout_seconds) then
          status = QRMI_RETURN_CODE_TASK_NOT_READY_ERROR
          why = 'task ' // task_id // ' is still ' // qrmi_task_status_name(state) // ' after the time given to wait'
          exit
        end if
      end if
      ignored = c_usleep(pause_us)
      waited = waited + real(pause_us) / 1.0e6
    end do
    if (present(message)) message = why
  end subroutine resource_wait

  !> The result of a completed task: the backend's JSON text.
  subroutine resource_result(self, task_id, text, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: task_id
    character(len=:), allocatable, intent(out) :: text
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why

    call task_text(self, c_qrmi_resource_task_result, task_id, text, status, why)
    if (present(message)) message = why
  end subroutine resource_result

  !> The task's log messages.
  subroutine resource_logs(self, task_id, text, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: task_id
    character(len=:), allocatable, intent(out) :: text
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why

    call task_text(self, c_qrmi_resource_task_logs, task_id, text, status, why)
    if (present(message)) message = why
  end subroutine resource_logs

  subroutine task_text(self, call, task_id, text, status, why)
    class(qrmi_resource), intent(inout) :: self
    procedure(c_qrmi_resource_task_text) :: call
    character(len=*), intent(in) :: task_id
    character(len=:), allocatable, intent(out) :: text, why
    integer, intent(out) :: status
    type(c_ptr) :: out

    text = ''
    if (.not. opened(self, status, why)) return
    out = c_null_ptr
    status = call(self%handle, c_string(task_id), out)
    why = last_error(status)
    if (status == QRMI_RETURN_CODE_SUCCESS) text = owned_string(out)
  end subroutine task_text

  !> Stops the task: an unfinished task is cancelled; a finished one keeps its result with qrmid.
  subroutine resource_stop(self, task_id, status, message)
    class(qrmi_resource), intent(inout) :: self
    character(len=*), intent(in) :: task_id
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out), optional :: message
    character(len=:), allocatable :: why

    if (opened(self, status, why)) then
      status = c_qrmi_resource_task_stop(self%handle, c_string(task_id))
      why = last_error(status)
    end if
    if (present(message)) message = why
  end subroutine resource_stop

  !> Frees the handle (the job's lease stays); the resource may be opened again.
  subroutine resource_close(self)
    class(qrmi_resource), intent(inout) :: self
    integer(c_int) :: ignored

    if (c_associated(self%handle)) ignored = c_qrmi_resource_free(self%handle)
    self%handle = c_null_ptr
    if (allocated(self%name)) deallocate(self%name)
  end subroutine resource_close

  subroutine resource_final(self)
    type(qrmi_resource), intent(inout) :: self
    call self%close()
  end subroutine resource_final

  !> The job's resource number `index` (from 1) as the Slurm plugin exports them: QRMI_JOB_QPU_RESOURCES (else
  !> SLURM_JOB_QPU_RESOURCES) split on QRMI_LIST_DELIMITER (default ','); '' when there is none.
  function qrmi_job_resource(index) result(name)
    integer, intent(in) :: index
    character(len=:), allocatable :: name
    name = list_item(job_list('QPU_RESOURCES'), index)
  end function qrmi_job_resource

  !> How many resources the job has.
  integer function qrmi_job_resource_count()
    character(len=:), allocatable :: list
    list = job_list('QPU_RESOURCES')
    qrmi_job_resource_count = 0
    if (len(list) > 0) qrmi_job_resource_count = count_items(list)
  end function qrmi_job_resource_count

  !> The QrmiResourceType value of the job's resource `name` (from QRMI_JOB_QPU_TYPES); -1 when unknown.
  integer function qrmi_resource_type_of(name)
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: names, types, type_name
    integer :: i

    qrmi_resource_type_of = -1
    names = job_list('QPU_RESOURCES')
    types = job_list('QPU_TYPES')
    if (len(names) == 0) return
    do i = 1, count_items(names)
      if (list_item(names, i) /= trim(name)) cycle
      type_name = list_item(types, i)
      qrmi_resource_type_of = type_value(type_name)
      return
    end do
  end function qrmi_resource_type_of

  !> 'Queued', 'Running', 'Completed', 'Failed' or 'Cancelled' (QRMI's names).
  function qrmi_task_status_name(state) result(name)
    integer, intent(in) :: state
    character(len=:), allocatable :: name
    select case (state)
    case (QRMI_TASK_STATUS_QUEUED); name = 'Queued'
    case (QRMI_TASK_STATUS_RUNNING); name = 'Running'
    case (QRMI_TASK_STATUS_COMPLETED); name = 'Completed'
    case (QRMI_TASK_STATUS_FAILED); name = 'Failed'
    case (QRMI_TASK_STATUS_CANCELLED); name = 'Cancelled'
    case default; name = 'Unknown'
    end select
  end function qrmi_task_status_name

  ! --- helpers ---------------------------------------------------------------------------------------------------

  !> The QrmiResourceType whose qrmi_config.json name (qrmi_config_resource_type_to_str) is `type_name`; -1 if none.
  integer function type_value(type_name)
    character(len=*), intent(in) :: type_name
    type(c_ptr) :: name
    integer :: i

    type_value = -1
    do i = 1, size(RESOURCE_TYPES)
      name = c_qrmi_config_resource_type_to_str(RESOURCE_TYPES(i))
      if (.not. c_associated(name)) cycle
      if (static_string(name) == type_name) then
        type_value = RESOURCE_TYPES(i)
        return
      end if
    end do
  end function type_value

  logical function opened(self, status, why)
    class(qrmi_resource), intent(in) :: self
    integer, intent(out) :: status
    character(len=:), allocatable, intent(out) :: why
    opened = c_associated(self%handle)
    status = QRMI_RETURN_CODE_SUCCESS
    why = ''
    if (opened) return
    status = QRMI_RETURN_CODE_NULL_POINTER_ERROR
    why = 'the resource is not open: call open first'
  end function opened

  !> '' after a call that returned `status` SUCCESS; otherwise the library's last error (its C string freed here),
  !> or a generic text when it has none.
  function last_error(status) result(why)
    integer, intent(in) :: status
    character(len=:), allocatable :: why

    why = ''
    if (status == QRMI_RETURN_CODE_SUCCESS) return
    why = owned_string(c_qrmi_get_last_error())
    if (len(why) == 0) why = 'QRMI call failed with return code ' // itoa(status)
  end function last_error

  !> A Fortran copy of a C string the library allocated; the C string is freed with qrmi_string_free.
  function owned_string(ptr) result(text)
    type(c_ptr), intent(in) :: ptr
    character(len=:), allocatable :: text
    integer(c_int) :: ignored

    text = static_string(ptr)
    if (c_associated(ptr)) ignored = c_qrmi_string_free(ptr)
  end function owned_string

  !> A Fortran copy of a C string (NULL: '').
  function static_string(ptr) result(text)
    type(c_ptr), intent(in) :: ptr
    character(len=:), allocatable :: text
    character(kind=c_char), pointer :: chars(:)
    integer :: n, i

    if (.not. c_associated(ptr)) then
      text = ''
      return
    end if
    n = int(c_strlen(ptr))
    call c_f_pointer(ptr, chars, [n])
    allocate (character(len=n) :: text)
    do i = 1, n
      text(i:i) = chars(i)
    end do
  end function static_string

  !> `text` NUL-terminated, for a `char *` argument.
  function c_string(text) result(c)
    character(len=*), intent(in) :: text
    character(kind=c_char, len=len(text) + 1) :: c
    c = text // c_null_char
  end function c_string

  !> `text` NUL-terminated as an array, whose address may be stored in a payload.
  subroutine to_c_chars(text, c)
    character(len=*), intent(in) :: text
    character(kind=c_char), allocatable, intent(out) :: c(:)
    integer :: i
    allocate(c(len(text) + 1))
    do i = 1, len(text)
      c(i) = text(i:i)
    end do
    c(len(text) + 1) = c_null_char
  end subroutine to_c_chars

  !> QRMI_JOB_<suffix>, else SLURM_JOB_<suffix>; '' when neither is set.
  function job_list(suffix) result(value)
    character(len=*), intent(in) :: suffix
    character(len=:), allocatable :: value
    value = env('QRMI_JOB_' // suffix)
    if (len(value) == 0) value = env('SLURM_JOB_' // suffix)
  end function job_list

  function env(name) result(value)
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: value
    integer :: length, stat
    call get_environment_variable(name, length=length, status=stat)
    if (stat /= 0 .or. length == 0) then
      value = ''
      return
    end if
    allocate(character(len=length) :: value)
    call get_environment_variable(name, value)
  end function env

  function delimiter() result(d)
    character(len=:), allocatable :: d
    d = env('QRMI_LIST_DELIMITER')
    if (len(d) == 0) d = ','
  end function delimiter

  integer function count_items(list)
    character(len=*), intent(in) :: list
    character(len=:), allocatable :: d
    integer :: at, from
    d = delimiter()
    count_items = 1
    from = 1
    do
      at = index(list(from:), d)
      if (at == 0) return
      count_items = count_items + 1
      from = from + at - 1 + len(d)
    end do
  end function count_items

  !> Item `n` (from 1) of `list` split on the delimiter; '' when there is none.
  function list_item(list, n) result(item)
    character(len=*), intent(in) :: list
    integer, intent(in) :: n
    character(len=:), allocatable :: item, d
    integer :: at, from, i
    item = ''
    if (len(list) == 0 .or. n < 1) return
    d = delimiter()
    from = 1
    do i = 1, n - 1
      at = index(list(from:), d)
      if (at == 0) return
      from = from + at - 1 + len(d)
    end do
    at = index(list(from:), d)
    if (at == 0) then
      item = list(from:)
    else
      item = list(from:from + at - 2)
    end if
  end function list_item

  function itoa(i) result(text)
    integer, intent(in) :: i
    character(len=:), allocatable :: text
    character(len=12) :: buffer
    write (buffer, '(i0)') i
    text = trim(buffer)
  end function itoa

end module qrmid_qrmi
